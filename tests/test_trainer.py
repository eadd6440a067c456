"""Trainer: run-directory contract, resume equals an uninterrupted run, warm-up restore, CLI."""

import json
import math
import shutil
import subprocess

import numpy as np
import pytest
import torch

from pgolf.cli import main
from pgolf.presets import get_preset

VOCAB = 288


def make_data(root):
    """A small tokenizer and train/val shards built from generated text (no shared data)."""
    from pgolf.data.shards import write_shard
    from pgolf.data.tokenizer import BOS_ID, load_tokenizer, train_tokenizer

    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "court", "law", "the", "of", "and", "model", "train", "data"]
    docs = [" ".join(rng.choice(words, size=rng.integers(20, 60))) + "." for _ in range(240)]
    root.mkdir(parents=True, exist_ok=True)
    tok_path = root / "tokenizer.model"
    train_tokenizer(docs, tok_path, vocab_size=VOCAB)
    sp = load_tokenizer(tok_path)
    ids = lambda ds: np.concatenate([[BOS_ID] + sp.encode(d) for d in ds])  # noqa: E731
    write_shard(root / "fineweb_val_000000.bin", ids(docs[:40]))
    write_shard(root / "fineweb_train_000000.bin", ids(docs[40:140]))
    write_shard(root / "fineweb_train_000001.bin", ids(docs[140:]))
    return root, tok_path


def micro_sets(**extra):
    """--set strings for a very small model and run (2 layers, d=32, seq 32)."""
    sets = {
        "vocab_size": VOCAB, "num_layers": 2, "model_dim": 32, "num_heads": 2, "num_kv_heads": 1, "mlp_mult": 2,
        "rope_dims": 8, "bigram_buckets": 64, "bigram_dim": 16, "value_embed_dim": 16, "value_embed_layers": "1",
        "xsa_last_n": 1, "train.seq_len": 32, "batch_tokens": 256, "micro_batch_seqs": 2, "iterations": 8,
        "warmup_steps": 0, "warmdown_iters": 4, "max_wallclock_seconds": 0, "log_every": 1, "qat": "false",
        "ema_decay": 0.9, "swa_every": 1, "swa_lr_threshold": 0.6, "muon_momentum_warmup_steps": 4,
        "loader_order": "shuffle", "eval.batch_seqs": 8, "device": "cpu", "threads": 1,
    }
    sets.update(extra)
    return [f"{k}={v}" for k, v in sets.items()]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("data"))


def read_losses(run_dir):
    return [json.loads(line)["train_loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def run_cli(data, out, *extra):
    d, tok = data
    args = ["train", "--preset", "tiny", "--data", str(d), "--tokenizer", str(tok), "--out", str(out)]
    return main(args + [a for s in micro_sets() for a in ("--set", s)] + list(extra))


def test_run_directory_contract(data, tmp_path):
    out = tmp_path / "run"
    assert run_cli(data, out) == 0
    for name in ("config.json", "model.pt", "checkpoint.pt", "train.log", "metrics.jsonl", "train_summary.json"):
        assert (out / name).is_file(), name
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["data_dir"] == str(data[0]) and cfg["tokenizer"] == str(data[1]) and cfg["model"]["model_dim"] == 32
    summary = json.loads((out / "train_summary.json").read_text())
    assert set(summary) == {"val_loss", "val_bpb", "steps", "train_time_s"} and summary["steps"] == 8
    assert math.isfinite(summary["val_bpb"]) and summary["val_loss"] < math.log(VOCAB)
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == list(range(1, 9))
    for key in ("train_loss", "lr_scale", "tokens_per_s", "ms_per_step", "elapsed_s"):
        assert all(key in r for r in recs)
    assert recs[-1]["lr_scale"] < recs[0]["lr_scale"] == 1.0
    log = (out / "train.log").read_text()
    for word in ("versions: python", "torch", "numpy", "git commit:", "hardware:", "parameters:", "config: {"):
        assert word in log
    from pgolf.train.checkpoint import load_trained_model

    model, rcfg = load_trained_model(out)
    state = torch.load(out / "model.pt", weights_only=True)
    assert set(state) == set(model.state_dict()) and rcfg.model.num_layers == 2
    # the summary's val numbers are those of model.pt
    from pgolf.data.loader import load_val_tokens
    from pgolf.data.tokenizer import byte_tables
    from pgolf.train.distributed import DistEnv
    from pgolf.train.trainer import evaluate_bpb

    val = evaluate_bpb(model, load_val_tokens(data[0], 32), byte_tables(data[1]), 32, DistEnv())
    assert val["val_bpb"] == pytest.approx(summary["val_bpb"], rel=1e-6)
    assert run_cli(data, out) == 1  # refuses to overwrite a run


def test_stop_and_resume_matches_uninterrupted_run(data, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    assert run_cli(data, full) == 0
    assert run_cli(data, part, "--stop-after", "3") == 0
    assert not (part / "model.pt").exists() and len(read_losses(part)) == 3
    assert main(["train", "--resume", str(part)]) == 0
    assert read_losses(part) == read_losses(full)  # exact on CPU
    a, b = torch.load(full / "model.pt", weights_only=True), torch.load(part / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    sa = json.loads((full / "train_summary.json").read_text())
    sb = json.loads((part / "train_summary.json").read_text())
    assert sa["val_bpb"] == sb["val_bpb"] and sb["steps"] == 8


def test_warmup_steps_restore_weights_and_optimizer_state(data):
    from pgolf.config import apply_sets
    from pgolf.train.distributed import DistEnv
    from pgolf.train.trainer import Trainer

    cfg = get_preset("tiny")
    apply_sets(cfg, micro_sets())
    tr = Trainer(cfg, data[0], DistEnv())
    tr.step(1.0, 0.9)  # non-trivial optimizer state first
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    adam_before = {k: v.clone() for k, v in tr.adam.state[tr.adam_params[0]].items()}
    mom_before = tr.muon.groups[0].momentum.clone()
    loader_before, ema_before = tr.loader.state_dict(), tr.ema.shadow["tok_emb.weight"].clone()
    tr.warmup(3)
    assert all(torch.equal(before[k], v) for k, v in tr.model.state_dict().items())
    assert all(torch.equal(adam_before[k], v) for k, v in tr.adam.state[tr.adam_params[0]].items())
    assert torch.equal(mom_before, tr.muon.groups[0].momentum)
    assert tr.loader.state_dict() == loader_before and tr.step_num == 1
    assert torch.equal(ema_before, tr.ema.shadow["tok_emb.weight"])


def test_final_weights_choice(data, tmp_path):
    out = tmp_path / "raw"
    assert run_cli(data, out, "--set", "final_weights=raw") == 0
    raw = torch.load(out / "model.pt", weights_only=True)
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(raw[k], ck["model"][k]) for k in raw)
    ema = ck["ema"]["shadow"]
    assert not torch.equal(ema["tok_emb.weight"], raw["tok_emb.weight"])


def test_qat_is_prepared_and_follows_the_lr_scale(data, tmp_path):
    pytest.importorskip("pgolf.quant.schemes.qat")
    from pgolf.config import apply_sets
    from pgolf.quant.schemes.qat import qat_state
    from pgolf.train.distributed import DistEnv
    from pgolf.train.trainer import Trainer

    cfg = get_preset("tiny")
    apply_sets(cfg, micro_sets(qat="true", fp16_max_numel=0))  # quantize even these tiny matrices
    tr = Trainer(cfg, data[0], DistEnv())
    tr.step(1.0, 0.9)
    assert qat_state(tr.model) and all(b is None for b in qat_state(tr.model).values())
    tr.step(0.1, 0.9)
    assert all(b is not None for b in qat_state(tr.model).values())
    assert set(tr.plain_state()) == set(tr.plain_keys)  # model.pt stays a plain GPT state_dict


@pytest.mark.cuda
def test_cuda_compiled_bf16_run(data, tmp_path):
    out = tmp_path / "cuda"
    assert run_cli(data, out, "--set", "device=cuda", "--set", "compile=on", "--set", "warmup_steps=2") == 0
    summary = json.loads((out / "train_summary.json").read_text())
    assert math.isfinite(summary["val_bpb"]) and summary["val_loss"] < math.log(VOCAB)
    from pgolf.train.trainer import peak_flops

    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert ("mfu" in last) == (peak_flops(torch.device("cuda", 0)) is not None)


def test_resume_without_checkpoint_is_one_line_error(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path)]) == 1
    assert "config.json" in capsys.readouterr().err


@pytest.mark.parametrize("precision", ["bf16", "fp32-master"])
def test_both_precisions_train_on_cpu(data, tmp_path, precision):
    """bf16: embeddings bf16, matrices (fp32 masters) and control tensors fp32, Muon momentum bf16; both learn."""
    from pgolf.config import apply_sets
    from pgolf.train.distributed import DistEnv
    from pgolf.train.trainer import Trainer

    cfg = get_preset("tiny")
    apply_sets(cfg, micro_sets(precision=precision, optimizer_table="seed", qat="true", fp16_max_numel=0))
    tr = Trainer(cfg, data[0], DistEnv())
    roles = tr.model.param_roles()
    want = torch.bfloat16 if precision == "bf16" else torch.float32
    for name, p in tr.model.named_parameters():
        assert p.dtype == (want if roles[name] == "embed" else torch.float32), name
    assert all(g.momentum.dtype == want for g in tr.muon.groups)
    losses = [float(tr.step(1.0 if i < 6 else 0.1, 0.9)) for i in range(10)]  # QAT on for the last 4
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-3:]) < losses[0] - 0.3, losses
    assert all(v.dtype == torch.float32 for v in tr.plain_state().values() if v.is_floating_point())


def test_training_clock_is_the_whole_loop_as_the_seed_measures_it(data, tmp_path, monkeypatch):
    """Time spent in the loop outside Trainer.step (here: logging made slow) counts as
    training time; the final evaluation does not."""
    import time as _time

    from pgolf.train.runlog import RunLog

    slow = 0.15
    real = RunLog.metrics
    monkeypatch.setattr(RunLog, "metrics", lambda self, rec: (_time.sleep(slow), real(self, rec))[1])
    out = tmp_path / "clock"
    assert run_cli(data, out, "--set", "iterations=4") == 0  # log_every=1: 4 slow log lines
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["train_time_s"] >= 4 * slow


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_commit_names_only_the_repository_that_holds_the_package(tmp_path):
    """A copy of runlog.py at a repository's top level reports its commit; one unpacked deeper inside
    another repository (as a train_gpt.py bundle folder can be) reports "unknown", not that repo's commit."""
    import importlib.util

    import pgolf.train.runlog as runlog

    def commit_seen_from(pkg_parent):
        path = pkg_parent / "pgolf" / "train" / "runlog.py"
        path.parent.mkdir(parents=True)
        shutil.copy(runlog.__file__, path)
        spec = importlib.util.spec_from_file_location("runlog_copy", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod.git_commit()

    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run(git + ["init", "-q"], check=True)
    (repo / "f").write_text("x")
    subprocess.run(git + ["add", "f"], check=True)
    subprocess.run(git + ["commit", "-qm", "c"], check=True)
    sha = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert commit_seen_from(repo).startswith(sha)
    assert commit_seen_from(repo / "bundle") == "unknown"


def test_nonfinite_loss_stops_with_one_line_and_resume_says_why(data, tmp_path, capsys, monkeypatch):
    """A weight turned NaN after step 2 makes the real loss NaN: exit 1, one line, no model.pt
    or train_summary.json (the run is not finished), and --resume says what happened."""
    from pgolf.train.trainer import Trainer

    step = Trainer.step

    def poisoned(self, lr_s, momentum):
        loss = step(self, lr_s, momentum)
        if self.step_num == 2:
            with torch.no_grad():
                next(self.model.parameters()).fill_(float("nan"))
        return loss

    monkeypatch.setattr(Trainer, "step", poisoned)
    out = tmp_path / "nan"
    capsys.readouterr()
    assert run_cli(data, out) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "training loss was nan at step 3" in err[0], err
    assert not (out / "model.pt").exists() and not (out / "train_summary.json").exists()
    assert main(["train", "--resume", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot resume" in err[0] and "nan at step 3" in err[0], err
