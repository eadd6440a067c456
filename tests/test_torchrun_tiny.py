"""``torchrun --nproc_per_node=2 -m pgolf train --preset tiny`` runs (issue #22, item 7): the
micro-batch is fitted to the world size (same global batch), or one line names the setting."""

import os
import subprocess
import sys

import pytest

from pgolf.errors import ConfigError
from test_distributed import free_port
from test_trainer import VOCAB, make_data


@pytest.mark.slow  # ~20 s: two processes start torch and train on a shared core
def test_torchrun_two_processes_train_the_tiny_preset(tmp_path):
    d, tok = make_data(tmp_path / "data")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    sets = [f"vocab_size={VOCAB}", "train.iterations=2", "max_wallclock_seconds=0", "device=cpu", "threads=1"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           "-m", "pgolf", "train", "--preset", "tiny", "--data", str(d), "--tokenizer", str(tok),
           "--out", str(tmp_path / "run")] + [a for s in sets for a in ("--set", s)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    assert r.stderr.count("micro_batch_seqs 32 -> 16") == 1  # one note, from rank 0
    log = (tmp_path / "run" / "train.log").read_text()
    # tiny's 8,192 tokens per step at seq 256 = 32 sequences: 2 ranks x 1 accumulation x 16
    assert "8,192 tokens/step = 2 ranks x 1 accum x 16 seqs x 256" in log
    assert "replica check: all 2 ranks hold identical weights" in log
    assert (tmp_path / "run" / "model.pt").is_file()


def test_fit_micro_batch_rules():
    from pgolf.presets import fit_micro_batch, get_preset, resolve_config

    cfg = get_preset("tiny")  # 8192 tokens = 32 sequences of 256, micro-batch 32
    assert fit_micro_batch(cfg, 1) is None and cfg.train.micro_batch_seqs == 32
    assert "32 -> 8" in fit_micro_batch(cfg, 4) and cfg.train.micro_batch_seqs == 8
    cfg = get_preset("tiny")
    with pytest.raises(ConfigError, match=r"^train.batch_tokens=8192 does not split into 3 processes"):
        fit_micro_batch(cfg, 3)
    with pytest.raises(ConfigError, match=r"^train.micro_batch_seqs=32 does not fit 2 processes.*divisor of 16"):
        resolve_config("tiny", env={"WORLD_SIZE": "2"}, sets=["micro_batch_seqs=32"])
    cfg = resolve_config("tiny", env={"WORLD_SIZE": "2", "RANK": "1"})
    assert cfg.train.micro_batch_seqs == 16
    cfg = get_preset("tiny")
    cfg.train.micro_batch_seqs = 12  # 16 sequences per rank: the largest divisor <= 12 is 8
    assert "12 -> 8" in fit_micro_batch(cfg, 2)
