"""Checkpoints by default (issue #22, item 4): the CLIs give every run a wall-time checkpoint
(``train.checkpoint_seconds``, 300 s of training time) except inside a challenge's timed loop,
and a training SIGKILLed mid-run resumes from its last periodic checkpoint."""

import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from pgolf.cli import main
from test_trainer import make_data, micro_sets


@pytest.mark.parametrize("preset, sets, expected", [
    ("tiny", [], 0),  # tiny's 300 s cap is a challenge-sized timed loop
    ("tiny", ["max_wallclock_seconds=0"], 300),
    ("tiny", ["max_wallclock_seconds=601"], 300),
    ("tiny", ["max_wallclock_seconds=600"], 0),
    ("seed", [], 0),
    ("record", [], 0),
    ("seed", ["max_wallclock_seconds=0"], 300),  # no timed loop at all
    ("seed", ["max_wallclock_seconds=1200"], 0),  # the seed preset's runs are challenge runs
    ("seed", ["checkpoint_seconds=30"], 30),  # explicitly asked: inside the timed loop too
    ("tiny", ["max_wallclock_seconds=0", "train.checkpoint_seconds=0"], 0),  # explicitly off
])
def test_checkpoint_interval_default(preset, sets, expected):
    from pgolf.presets import resolve_config

    assert resolve_config(preset, sets=sets, env={}).train.checkpoint_seconds == expected


def test_sigkill_mid_training_resumes_from_the_last_checkpoint(tmp_path, capsys):
    d, tok = make_data(tmp_path / "data")
    out = tmp_path / "run"
    sets = micro_sets(iterations=10**6, checkpoint_seconds=1)
    cmd = [sys.executable, "-m", "pgolf", "train", "--preset", "tiny", "--data", str(d), "--tokenizer", str(tok),
           "--out", str(out)] + [a for s in sets for a in ("--set", s)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ckpt = out / "checkpoint.pt"
    deadline = time.time() + 180
    while not ckpt.is_file():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.time() < deadline, "no periodic checkpoint was written"
        time.sleep(0.1)
    time.sleep(0.5)  # keep training past the checkpoint, then the OOM killer / preemption strikes
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = torch.load(ckpt, weights_only=True)["step"]
    assert saved >= 1 and not (out / "model.pt").exists()
    assert main(["train", "--resume", str(out), "--set", f"iterations={saved + 3}"]) == 0
    log = (out / "train.log").read_text()
    assert f"resumed from {ckpt} at step {saved}," in log
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == saved + 3 and (out / "model.pt").is_file()
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps[-3:] == [saved + 1, saved + 2, saved + 3]


def test_the_same_state_saves_to_the_same_bytes(tmp_path):
    """model.pt/checkpoint.pt bytes depend on the state only, not on the temp name of the atomic write."""
    import torch

    from pgolf.train.checkpoint import save_torch

    state = {"w": torch.arange(6.0).reshape(2, 3), "step": 3}
    save_torch(tmp_path / "model.pt", state)
    save_torch(tmp_path / "other" / "model.pt", state)
    assert (tmp_path / "model.pt").read_bytes() == (tmp_path / "other" / "model.pt").read_bytes()
