"""TensorBoard events beside metrics.jsonl (issue #22 item 9): ``pgolf train --tensorboard``
writes every numeric field of every metrics record as a scalar at its step in RUN/tb/, read
back here with TensorBoard's own reader; a resumed run's events have each step once; without
the package the flag is one line and exit 1 before anything is written."""

import builtins
import json

import pytest

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from pgolf.cli import main  # noqa: E402
from test_trainer import make_data, micro_sets  # noqa: E402


def _events(run):
    acc = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _expected(run):
    out = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        for k, v in rec.items():
            if k != "step" and isinstance(v, (int, float)):
                out.setdefault(k, []).append((rec["step"], v))
    return out


def _train(args, sets):
    return main(["train", "--preset", "tiny", *args, *[a for s in sets for a in ("--set", s)]])


def test_train_tensorboard_events_equal_metrics(tmp_path):
    d, tok = make_data(tmp_path / "data")
    run = tmp_path / "run"
    sets = micro_sets(iterations=6)
    assert _train(["--data", str(d), "--tokenizer", str(tok), "--out", str(run), "--tensorboard",
                   "--stop-after", "4"], sets) == 0
    assert main(["train", "--resume", str(run), "--tensorboard"]) == 0
    want, got = _expected(run), _events(run)
    assert {"train_loss", "lr_scale", "tokens_per_s", "ms_per_step", "elapsed_s"} <= set(want)
    assert set(got) == set(want)
    for tag, points in want.items():
        assert [s for s, _ in got[tag]] == [s for s, _ in points], tag  # every step once, in order
        assert [v for _, v in got[tag]] == pytest.approx([v for _, v in points], rel=1e-6), tag


def test_tensorboard_flag_without_the_package_is_one_line(tmp_path, monkeypatch, capsys):
    real_import = builtins.__import__

    def no_tb(name, *a, **k):
        if name.startswith("torch.utils.tensorboard") or name.startswith("tensorboard"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_tb)
    run = tmp_path / "run"
    assert _train(["--data", str(tmp_path), "--out", str(run), "--tensorboard"], []) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--tensorboard needs the tensorboard package" in err[0]
    assert not run.exists()
