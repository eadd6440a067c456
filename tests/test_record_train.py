"""`--preset record` on CPU at a small width: trains on a CaseOps dataset, switches the
depth recurrence on at enable_looping_at, floors the lr at min_lr, counts original bytes."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from pgolf.cli import main
from pgolf.train import schedule

WORDS = "The Court said NASA and iPhone users of the LAW model Data Train alpha beta".split()


@pytest.fixture(scope="module")
def caseops_data(tmp_path_factory):
    from pgolf.data.build import build_dataset

    rng = np.random.default_rng(0)
    docs = [" ".join(rng.choice(WORDS, size=int(rng.integers(30, 80)))) + "." for _ in range(200)]
    out = tmp_path_factory.mktemp("rec") / "data"
    build_dataset(lambda: iter(docs), out, val_docs=30, vocab_size=320, caseops="v1", show_progress=False)
    return out, docs


def small_record_sets(**extra) -> list[str]:
    sets = {"vocab_size": 320, "num_layers": 4, "model_dim": 64, "num_heads": 4, "num_kv_heads": 2,
            "xsa_last_n": 4, "parallel_start_layer": 3, "loop_start": 1, "loop_end": 2, "num_loops": 1,
            "train.seq_len": 64, "eval.seq_len": 64, "batch_tokens": 512, "micro_batch_seqs": 4, "iterations": 12,
            "warmup_steps": 1, "max_wallclock_seconds": 0, "warmdown_iters": 12, "log_every": 1,
            "eval.batch_seqs": 8, "device": "cpu", "threads": 1}
    sets.update(extra)
    return [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]


def test_record_preset_trains_a_few_steps_on_cpu(caseops_data, tmp_path, capsys):
    data, docs = caseops_data
    out = tmp_path / "run"
    assert main(["train", "--preset", "record", "--data", str(data), "--out", str(out), *small_record_sets()]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 12 and math.isfinite(summary["val_bpb"])
    log = (out / "train.log").read_text()
    assert "depth recurrence on at step 5: blocks [0, 1, 2, 1, 2, 3]" in log  # 0.35 of 12 steps
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert min(r["lr_scale"] for r in recs) == pytest.approx(0.1)  # the min_lr floor
    # bpb counts the original text's bytes (the byte files), not the CaseOps pieces
    val_bytes = sum(len(d.encode()) for d in docs[:30])
    n_targets = len(np.fromfile(data / "fineweb_val_000000.bin", dtype="<u2", offset=1024)) - 1
    k = n_targets // 64
    counts = np.fromfile(data / "fineweb_val_bytes_000000.bin", dtype="<u2", offset=1024)
    expected = summary["val_loss"] * k * 64 / math.log(2) / int(counts[1:k * 64 + 1].sum())
    assert summary["val_bpb"] == pytest.approx(expected, rel=1e-9)
    assert int(counts.sum()) == val_bytes


def test_min_lr_floor_and_looping_schedule():
    t = SimpleNamespace(iterations=100, warmdown_iters=50, max_wallclock_seconds=0, warmdown_frac=0.0, min_lr=0.1)
    assert schedule.lr_scale(10, 0.0, t) == 1.0
    assert schedule.lr_scale(90, 0.0, t) == pytest.approx(0.2)
    assert schedule.lr_scale(99, 0.0, t) == pytest.approx(0.1)  # floored (unfloored: 0.02)
    t.min_lr = 0.0
    assert schedule.lr_scale(99, 0.0, t) == pytest.approx(0.02)
    cfg = SimpleNamespace(model=SimpleNamespace(num_loops=2, enable_looping_at=0.35), train=t)
    assert not schedule.looping_on(34, 0.0, cfg) and schedule.looping_on(35, 0.0, cfg)
    t.max_wallclock_seconds = 600.0
    assert schedule.looping_on(1, 210.0, cfg)  # wall-clock progress counts too
    cfg.model.num_loops = 0
    assert not schedule.looping_on(99, 599.0, cfg)
