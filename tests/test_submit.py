"""Tests for pgolf submit: records folder, budget and leak refusals, the generated train_gpt.py.

Fast tests use run directories written by the test (the documented stage file formats);
the slow test runs the generated train_gpt.py for real with tiny settings on the CPU.
"""

import ast
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pgolf.cli import main as cli_main
from pgolf.pipeline.entry import script_config
from pgolf.submit import bundle
from pgolf.submit.records import CHALLENGE_BYTES

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def fake_seed(d: Path, seed: int, artifact_bytes=5_000_000, ngram_mode="causal"):
    d.mkdir(parents=True, exist_ok=True)
    from pgolf.presets import get_preset

    cfg = get_preset("tiny").to_dict()
    cfg["train"]["seed"] = seed
    (d / "config.json").write_text(json.dumps({**cfg, "data_dir": "x", "tokenizer": "y"}))
    (d / "train_summary.json").write_text(json.dumps({"val_loss": 1.4, "val_bpb": 2.0 + seed / 100, "steps": 9,
                                                      "train_time_s": 1.5}))
    (d / "train.log").write_text(f"training log of seed {seed}\n")
    (d / "quant.json").write_text(json.dumps({"scheme": "turbo", "tensors": [], "artifact_bytes": artifact_bytes,
                                              "code_bytes": 1, "total_bytes": artifact_bytes + 1,
                                              "budget_bytes": CHALLENGE_BYTES, "within_budget": True}))
    (d / "eval.json").write_text(json.dumps({
        "tokens": 100, "bytes": 250,
        "neural": {"standard": {"val_loss": 1.5, "val_bpb": 2.1 + seed / 100},
                   "sliding": {"val_loss": 1.45, "val_bpb": 2.05 + seed / 100, "stride": 64}},
        "ngram": {"mode": ngram_mode, "valid": ngram_mode == "causal", "val_loss": 1.4,
                  "val_bpb": (2.0 if ngram_mode == "causal" else 0.3) + seed / 100, "orders": [2, 12]}}))


def submit_args(run, out, *extra):
    return ["submit", str(run), "--out", str(out), "--name", "Test entry", "--author", "Ada",
            "--github-id", "ada", *extra]


def test_records_folder(tmp_path):
    run = tmp_path / "run"
    for s in (1, 2):
        fake_seed(run / f"seed_{s}", s, artifact_bytes=5_000_000 + s)
    out = tmp_path / "rec"
    assert cli_main(submit_args(run, out, "--blurb", "tiny test")) == 0
    sub = json.loads((out / "submission.json").read_text())
    code = (out / "train_gpt.py").read_bytes()
    assert sub["bytes_code"] == len(code)
    assert sub["bytes_total"] == 5_000_002 + len(code)  # largest artifact + code
    assert sub["val_bpb"] == pytest.approx((2.01 + 2.02) / 2) and sub["score_source"] == "causal n-gram"
    for key in ("name", "val_bpb", "bytes_total", "blurb", "author", "github_id", "date"):
        assert key in sub
    assert re.match(r"^\d{4}-\d{2}-\d{2}$", sub["date"])
    assert (out / "train_seed1.log").read_text() == "training log of seed 1\n"
    readme = (out / "README.md").read_text()
    assert "| 1 |" in readme and "| 2 |" in readme and "5,000,002" in readme
    ast.parse(code)  # bytes: the script's coding line says latin-1


def test_refuses_over_budget(tmp_path, capsys):
    run = tmp_path / "run"
    fake_seed(run, 1, artifact_bytes=CHALLENGE_BYTES - 1000)  # the script alone is far more than 1000 B
    assert cli_main(submit_args(run, tmp_path / "rec")) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "exceeds the challenge's 16,000,000 B" in err
    assert not (tmp_path / "rec" / "submission.json").exists()


def test_refuses_leaky_score(tmp_path, capsys):
    run = tmp_path / "run"
    fake_seed(run, 1, ngram_mode="two-pass")
    assert cli_main(submit_args(run, tmp_path / "rec")) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "leaky" in err and "two-pass" in err
    assert cli_main(submit_args(run, tmp_path / "rec", "--score", "ngram")) == 1
    # the honest neural number of the same run can be submitted
    assert cli_main(submit_args(run, tmp_path / "rec", "--score", "sliding")) == 0
    sub = json.loads((tmp_path / "rec" / "submission.json").read_text())
    assert sub["val_bpb"] == pytest.approx(2.06) and sub["score_source"] == "sliding"


def test_refuses_unfinished_run(tmp_path, capsys):
    run = tmp_path / "run"
    fake_seed(run, 1)
    (run / "eval.json").unlink()
    assert cli_main(submit_args(run, tmp_path / "rec")) == 1
    assert "no eval.json" in capsys.readouterr().err


def test_minify_strips_prunes_and_keeps_behaviour():
    from pgolf.submit.minify import minify_modules

    a = ('"""doc"""\nfrom dataclasses import dataclass\n\n\n@dataclass\nclass Cfg:\n    """only doc"""\n    n: int = 3\n\n\n'
         'def used(x: int) -> int:\n    """doc"""\n    # comment\n    y: int = x + 1\n    return helper(y)\n\n\n'
         'def helper(v):\n    return v * Cfg().n\n\n\ndef unused_thing():\n    return 0\n\n\n'
         'if __name__ == "__main__":\n    unused_thing()\n')
    b = "from m import used\n\n\ndef by_string():\n    return 1\n\n\nTABLE = {'f': 'by_string'}\n"
    out = minify_modules({"m": a, "n": b}, extra_roots="used(1)")
    assert "doc" not in out["m"] and "comment" not in out["m"] and "-> int" not in out["m"]
    assert "unused_thing" not in out["m"] and "__main__" not in out["m"]
    assert "n:int=3" in out["m"]  # dataclass fields keep their annotations; optional spaces go
    assert "def by_string" in out["n"]  # named in a string: kept (conservative)
    assert "def used(x):y=x+1;return helper(y)" in out["m"]  # simple statements joined onto one line
    ns = {}
    exec(out["m"], ns)
    assert ns["used"](1) == 6


def test_minify_drops_imports_and_future_line_nothing_uses():
    from pgolf.submit.minify import minify_modules

    src = ("from __future__ import annotations\nimport os\nimport re\nimport numpy\n"
           "from typing import Any, Iterator\nfrom pgolf.fileio import atomic_path\nfrom pgolf.errors import PgolfError\n\n\n"
           "def f(x: Any) -> Iterator:\n    return re.sub('a', 'b', x)\n")
    out = minify_modules({"m": src}, extra_roots="f")["m"]
    assert "__future__" not in out and "typing" not in out and "import os" not in out  # nothing uses them
    assert "import re" in out and "import numpy" in out  # used; not stdlib (may have import effects)
    assert "from pgolf.fileio import atomic_path" in out and "pgolf.errors" in out  # pgolf modules stay imported
    kept = minify_modules({"m": "from __future__ import annotations\nclass C:\n    n: int = 1\n"}, extra_roots="C")
    assert "__future__" in kept["m"]  # a class-body annotation is left: the future import still matters


def test_script_is_reproducible_and_unpacks_to_readable_modules():
    from pgolf.presets import get_preset

    cfg = get_preset("seed").to_dict()
    first = bundle.build_script(cfg)
    bundle._build.cache_clear()
    assert bundle.build_script(cfg) == first  # byte for byte
    assert first.split(b"\n")[1] == b"# -*- coding: latin-1 -*-"
    files = bundle.read_bundle(first)
    stored = files.pop(bundle.RUN_CONFIG)
    assert json.loads(stored) == {"preset": "seed"}  # the seed preset is pgolf's defaults: nothing to store
    assert script_config(stored).to_dict() == cfg
    paths = {bundle.module_path(m).relative_to(bundle.PACKAGE_ROOT.parent).as_posix() for m in bundle.script_modules(cfg)}
    left_out = paths - set(files)  # only empty package __init__ files (namespace packages once unpacked)
    assert set(files) <= paths and left_out and all(p.endswith("/__init__.py") for p in left_out)
    assert "pgolf/__init__.py" in files  # it holds __version__
    assert "pgolf/eval/ngram_leaky.py" not in files  # causal: the leaky modes stay out
    assert not [p for p, src in files.items() if "\n " in src]  # every module went through the compact printer
    # ttt.mode none: no TTT pass nor stream driver; the eval CLI (its table) stays out too
    assert not {"pgolf/eval/ttt.py", "pgolf/eval/stream.py", "pgolf/eval/commands.py"} & set(files)
    assert "pgolf/eval/harness.py" in files and "pgolf/eval/reveal.py" in files
    assert "pgolf/pipeline/entry.py" in files and "pgolf/quant/format/artifact.py" in files
    assert not any(p.startswith(("pgolf/submit", "pgolf/cli")) for p in files)
    for path, src in files.items():
        ast.parse(src, filename=path)  # plain Python text


def test_script_config_stores_only_differences_and_reads_back_every_preset():
    """run_config.json holds the fields that differ from RunConfig() (incl. ttt); read back, it is the config."""
    from pgolf.presets import get_preset
    from pgolf.config import config_overrides

    for name in ("seed", "tiny", "record"):
        cfg = get_preset(name)
        cfg.ttt.mode = "phased"
        stored = json.dumps(config_overrides(cfg.to_dict()))
        assert json.loads(stored)["ttt"]["mode"] == "phased"
        assert script_config(stored).to_dict() == cfg.to_dict()
    files = bundle.read_bundle(bundle.build_script(get_preset("seed").to_dict() | {"ttt": {"mode": "lora"}}))
    assert "pgolf/eval/ttt.py" in files and script_config(files[bundle.RUN_CONFIG]).ttt.mode == "lora"


def test_script_refuses_a_run_folder_in_use_with_one_line(tmp_path, monkeypatch, capsys):
    """train_gpt.py runs every stage once; a RUN_ID whose folder holds a run ends with one line, exit 1."""
    from pgolf.pipeline.entry import main

    (tmp_path / "runs" / "taken").mkdir(parents=True)
    (tmp_path / "runs" / "taken" / "config.json").write_text("{}")
    (tmp_path / "run_config.json").write_text('{"preset": "tiny"}')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RUN_ID", "taken")
    with pytest.raises(SystemExit) as exc:
        main(str(tmp_path / "run_config.json"), str(tmp_path / "run_config.json"))
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("train_gpt.py: error: runs/taken already holds a run") and "\n" not in err


def test_binary_literal_round_trips_random_payloads():
    """Any bytes, written into a latin-1 source file as binary_literal, compile back to themselves."""
    rng = random.Random(13)
    cases = [bytes(range(256)), b"\0" * 9 + b"0123", b'\\"\\\r\n\r', b"", b'"', b'""', b'"""', b'a""""b"\\"', b"\r\n",
             b"\0" + bytes(range(256)) + b"\0" + b"".join(b"\0" + bytes([c]) for c in range(256)) + b"\0"]
    cases += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000))) for _ in range(200)]
    for data in cases:
        src = ('# -*- coding: latin-1 -*-\nB="""%s""".encode("latin-1")\n' % bundle.binary_literal(data))
        src = src.encode("latin-1")
        ns = {}
        exec(compile(src, "t.py", "exec"), ns)
        assert ns["B"] == data
    random_bytes = sum(len(d) for d in cases[10:])
    assert sum(len(bundle.binary_literal(d)) for d in cases[10:]) < 1.015 * random_bytes  # 3 escaped byte values of 256: ~1.2%


def test_optional_features_are_never_imported_statically():
    """Modules in features.FEATURES are reached only through features.load, so a config that does
    not select them does not carry them (a static import from shared code would pull them in)."""
    from pgolf.features import FEATURES, modules_for

    static = set(bundle.bundled_modules())
    assert not set(FEATURES.values()) & static
    assert modules_for({"eval": {"ngram": "loo"}}) == ["pgolf.eval.ngram_leaky"]
    assert modules_for({"eval": {"ngram": "causal"}, "quant": {}}) == []


def test_presets_are_not_bundled():
    """The script reads its config from run_config.json: preset resolution (pgolf.presets) stays
    out of every preset's script, and ``python -m pgolf.submit.budget PRESET`` still prints the count."""
    from pgolf.presets import PRESETS, get_preset

    for name in PRESETS:
        assert "pgolf.presets" not in bundle.script_modules(get_preset(name).to_dict())
    out = subprocess.run([sys.executable, "-m", "pgolf.submit.budget", "tiny"], capture_output=True, text=True,
                         check=True).stdout
    assert out == f"{len(bundle.build_script(get_preset('tiny').to_dict())):,} bytes of train_gpt.py for preset tiny\n"


def test_seed_script_size_does_not_grow():
    """A guard on the seed preset's train_gpt.py (44,481 B on 2026-11-28; 50,958 B before the presets,
    the eval CLI, TTT, the leaky scorer, calibration, zstd and pgolf run's resume logic left the
    script): new code reaches it only when the seed config uses it; optional features go through
    pgolf.features."""
    from pgolf.presets import get_preset

    assert len(bundle.build_script(get_preset("seed").to_dict())) <= 45_000


def test_bundle_is_self_contained(tmp_path):
    """The generated script imports every bundled module from itself, not from the installed package."""
    from pgolf.presets import get_preset

    script = tmp_path / "train_gpt.py"
    cfg = get_preset("tiny").to_dict()
    cfg["eval"]["ngram"] = "two-pass"  # an optional module (features.FEATURES) rides along
    bundle.write_script(script, cfg)
    mods = bundle.script_modules(cfg)
    assert "pgolf.eval.ngram_leaky" in mods
    assert "pgolf.pipeline.stages" in mods and "pgolf.train.trainer" in mods
    assert not any(m.startswith("pgolf.submit") or m == "pgolf.pipeline.report" for m in mods)
    unpack = tmp_path / "unpacked"
    code = (
        "import importlib, runpy, sys\n"
        f"g = runpy.run_path({str(script)!r}, run_name='bundle')\n"
        f"assert g['_PKG_DIR'].startswith({str(unpack)!r}), g['_PKG_DIR']\n"
        f"mods = {mods!r}\n"
        "for m in mods:\n"
        "    mod = importlib.import_module(m)\n"
        "    where = mod.__file__ or list(mod.__path__)  # a namespace package (empty __init__ left out) has no file\n"
        "    assert all(str(w).startswith(g['_PKG_DIR']) for w in ([where] if isinstance(where, str) else where)), (m, where)\n"
        "print('ok', len(mods))\n"
    )
    env = {**os.environ, "PGOLF_BUNDLE_DIR": str(unpack)}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == f"ok {len(mods)}"


@pytest.mark.slow
def test_generated_train_gpt_runs_end_to_end(tmp_path):
    """python train_gpt.py with tiny settings via env vars: trains, writes an artifact, evaluates, prints val_bpb."""
    if not (SHARED / "fineweb_sp1024").is_dir():
        pytest.skip("shared development data not present")
    from pgolf.data.shards import read_shard, write_shard
    from pgolf.presets import resolve_config

    data = tmp_path / "data"
    data.mkdir()
    write_shard(data / "fineweb_train_000000.bin", read_shard(SHARED / "fineweb_sp1024" / "fineweb_train_000000.bin")[:200_000])
    write_shard(data / "fineweb_val_000000.bin", read_shard(SHARED / "fineweb_sp1024" / "fineweb_val_000000.bin")[:8192])
    cfg = resolve_config("tiny", sets=["eval.ngram_max_order=6", "eval.stride=128"]).to_dict()
    script = tmp_path / "train_gpt.py"
    bundle.write_script(script, cfg)
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "PGOLF_FAULT")}
    env.update(PGOLF_BUNDLE_DIR=str(tmp_path / "unpacked"), DATA_PATH=str(data), TOKENIZER_PATH=str(SHARED / "tokenizers" / "fineweb_1024_bpe.model"),
               RUN_ID="t", MODEL_DIM="128", ITERATIONS="20", MAX_WALLCLOCK_SECONDS="15", SEED="7")
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "runs" / "t"
    assert (run / "artifact.pgz").is_file() and (run / "eval.json").is_file()
    cfg_used = json.loads((run / "config.json").read_text())
    assert cfg_used["model"]["model_dim"] == 128 and cfg_used["train"]["seed"] == 7
    assert "step" in (run / "train.log").read_text()
    last = r.stdout.strip().splitlines()[-1]
    m = re.match(r"^val_loss:([0-9.]+) val_bpb:([0-9.]+) \(causal n-gram\)$", last)
    assert m, last
    ev = json.loads((run / "eval.json").read_text())
    assert float(m.group(2)) == pytest.approx(ev["ngram"]["val_bpb"], abs=1e-7)
    q = json.loads((run / "quant.json").read_text())
    assert q["code_bytes"] == script.stat().st_size


@pytest.mark.parametrize("scheme", [None, "int6"])
def test_quantize_and_submit_count_the_same_code_bytes(tmp_path, scheme):
    """quant.json's code_bytes == submission.json's bytes_code == len(the written train_gpt.py),
    also when ``quantize --scheme`` differs from the run's config (the script carries that scheme)."""
    from pgolf.quant.binding import bind_file
    from tests.test_quantize_cli import _make_run

    run = tmp_path / "run"
    _make_run(run)
    assert cli_main(["quantize", str(run)] + (["--scheme", scheme] if scheme else [])) == 0
    q = json.loads((run / "quant.json").read_text())
    (run / "train_summary.json").write_text(json.dumps({"val_loss": 1.4, "val_bpb": 2.0, "steps": 9,
                                                        "train_time_s": 1.5}))
    (run / "eval.json").write_text(json.dumps({"tokens": 100, "bytes": 250, "neural": {
        "standard": {"val_loss": 1.5, "val_bpb": 2.1}, "sliding": {"val_loss": 1.45, "val_bpb": 2.05, "stride": 64}},
        **bind_file(run / "artifact.pgz")}))  # as pgolf eval --artifact binds it
    out = tmp_path / "rec"
    assert cli_main(submit_args(run, out)) == 0
    sub = json.loads((out / "submission.json").read_text())
    assert q["code_bytes"] == sub["bytes_code"] == (out / "train_gpt.py").stat().st_size
    assert q["total_bytes"] == q["artifact_bytes"] + q["code_bytes"]
    unpacked = bundle.read_bundle((out / "train_gpt.py").read_bytes())
    assert script_config(unpacked[bundle.RUN_CONFIG]).quant.scheme == q["quant_config"]["scheme"]
    assert q["quant_config"]["scheme"] == (scheme or "turbo")
