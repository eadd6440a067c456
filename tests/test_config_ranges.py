"""Every numeric setting has a range: nonsense via --set, an environment variable or a saved
config.json ends with one line naming field, value and range, exit code 2, nothing written.

The fields are discovered from the config dataclasses (not from pgolf's range table); the
rule tested is the issue's: NaN, inf, a negative number and an absurdly large one are never
a valid setting of any numeric field. ``pgolf train`` resolves its config before it looks at
data or builds a model, so each invocation is in-process and quick.
"""

import dataclasses
import json

import pytest

from pgolf.cli import main
from pgolf.config import ENV_OVERRIDES, SECTIONS, RunConfig

BAD = {"nan": "nan", "inf": "inf", "negative": "-1", "huge": "1e30"}


def _numeric_fields() -> list[str]:
    cfg = RunConfig()
    out = []
    for s in SECTIONS:
        for f in dataclasses.fields(getattr(cfg, s)):
            v = getattr(getattr(cfg, s), f.name)
            nums = [x for x in (v if isinstance(v, tuple) else (v,)) if not isinstance(x, (bool, str))]
            if nums and all(isinstance(x, (int, float, tuple)) for x in nums):
                out.append(f"{s}.{f.name}")
    return out


FIELDS = _numeric_fields()


def _bad_value(key: str, value: str) -> str:
    """``value`` in the field's own syntax: a tuple field gets it as one element."""
    v = getattr(getattr(RunConfig(), key.split(".")[0]), key.split(".")[1])
    if isinstance(v, tuple) and v and isinstance(v[0], tuple):
        return json.dumps([[value, 4]]) if value not in ("nan", "inf") else f'[["{value}", 4]]'
    return value


def _rejected(capsys, argv, out, key, value) -> str | None:
    """None if rejected as the issue asks, else what went wrong."""
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err.strip().splitlines()
    if rc != 2:
        return f"{key}={value}: exit {rc}, stderr {err[-1:] if err else []}"
    if len(err) != 1 or key.split(".")[1] not in err[0] or "range" not in err[0]:
        return f"{key}={value}: stderr {err}"
    if out.exists():
        return f"{key}={value}: {out} was written"
    return None


def test_numeric_fields_are_found():
    assert len(FIELDS) > 90 and "train.matrix_lr" in FIELDS and "eval.two_pass_buckets" in FIELDS


@pytest.mark.parametrize("kind", sorted(BAD))
def test_every_numeric_field_rejects_nonsense_via_set(capsys, tmp_path, kind):
    out = tmp_path / "run"
    bad = [_rejected(capsys, ["train", "--preset", "tiny", "--out", str(out), "--set", f"{k}={_bad_value(k, BAD[kind])}"],
                     out, k, BAD[kind]) for k in FIELDS]
    bad = [b for b in bad if b]
    assert not bad, f"{len(bad)} of {len(FIELDS)} fields: " + "; ".join(bad[:8])


@pytest.mark.parametrize("kind", sorted(BAD))
def test_every_numeric_environment_variable_rejects_nonsense(capsys, tmp_path, monkeypatch, kind):
    out = tmp_path / "run"
    bad = []
    for var, key in sorted(ENV_OVERRIDES.items()):
        if key not in FIELDS:
            continue
        with monkeypatch.context() as m:
            m.setenv(var, BAD[kind])
            bad.append(_rejected(capsys, ["train", "--preset", "tiny", "--out", str(out)], out, key, BAD[kind]))
    bad = [b for b in bad if b]
    assert not bad, "; ".join(bad[:8])


def test_a_saved_config_out_of_range_is_refused_on_resume(capsys, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    cfg = RunConfig().to_dict()
    cfg["train"]["matrix_lr"] = "nan"
    (run / "config.json").write_text(json.dumps(cfg))
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.matrix_lr=nan" in err[0] and "range" in err[0]
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]


@pytest.mark.parametrize("value", ["1e-3", "0.5"])
def test_values_inside_the_ranges_still_resolve(value):
    from pgolf.presets import resolve_config

    assert resolve_config("tiny", sets=[f"train.matrix_lr={value}"]).train.matrix_lr == float(value)


@pytest.mark.parametrize("argv", [
    ["demo", "--wallclock", "-5"],
    ["demo", "--wallclock", "nan"],
    ["train", "--preset", "tiny", "--stop-after", "-1"],
    ["eval", "x", "--max-tokens", "-1"],
    ["data", "check", "x", "--vocab-size", "-1"],
    ["data", "check", "x", "--vocab-size", "1e9"],
])
def test_numeric_flags_reject_nonsense_before_any_work(capsys, argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert "argument" in capsys.readouterr().err
