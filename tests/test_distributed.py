"""torchrun with 2 CPU processes (gloo) matches 1 process with twice the accumulation."""

import json
import math
import os
import socket
import subprocess
import sys

import torch

from test_trainer import make_data, micro_sets, read_losses


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one(tmp_path):
    d, tok = make_data(tmp_path / "data")
    sets = [a for s in micro_sets(iterations=4, warmup_steps=1, warmdown_iters=2) for a in ("--set", s)]
    common = ["-m", "pgolf", "train", "--preset", "tiny", "--data", str(d), "--tokenizer", str(tok)] + sets
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    one = subprocess.run([sys.executable] + common + ["--out", str(tmp_path / "one")], env=env,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
    two = subprocess.run(torchrun + common + ["--out", str(tmp_path / "two")], env=env,
                         capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    log = (tmp_path / "two" / "train.log").read_text()
    assert "world size 2 (gloo)" in log and "x 2 accum x" in log  # 1 process ran 4 accumulation steps
    assert "replica check: all 2 ranks hold identical weights" in log
    l1, l2 = read_losses(tmp_path / "one"), read_losses(tmp_path / "two")
    assert len(l1) == len(l2) == 4
    assert max(abs(a - b) for a, b in zip(l1, l2)) < 1e-5
    w1 = torch.load(tmp_path / "one" / "model.pt", weights_only=True)
    w2 = torch.load(tmp_path / "two" / "model.pt", weights_only=True)
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) < 1e-4
    s1 = json.loads((tmp_path / "one" / "train_summary.json").read_text())
    s2 = json.loads((tmp_path / "two" / "train_summary.json").read_text())
    assert abs(s1["val_bpb"] - s2["val_bpb"]) < 1e-4


def test_two_processes_train_in_bf16_with_the_seed_groups(tmp_path):
    """The seed's precision and optimizer table under torchrun: runs, ranks stay identical."""
    d, tok = make_data(tmp_path / "data")
    sets = micro_sets(iterations=3, precision="bf16", optimizer_table="seed", qat="true", fp16_max_numel=0)
    common = ["-m", "pgolf", "train", "--preset", "tiny", "--data", str(d), "--tokenizer", str(tok)]
    common += [a for s in sets for a in ("--set", s)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
    two = subprocess.run(torchrun + common + ["--out", str(tmp_path / "two")], env=env,
                         capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    log = (tmp_path / "two" / "train.log").read_text()
    assert "replica check: all 2 ranks hold identical weights" in log
    assert all(math.isfinite(v) for v in read_losses(tmp_path / "two"))
