"""Tests for pgolf.pipeline.run: stage chaining, skipping valid outputs, --force, resume after a kill.

The fast tests replace the stage functions with fakes that write the documented files,
so they test the chaining logic alone. The end-to-end test runs the real ``pgolf run``
in a subprocess, kills it (SIGKILL via the PGOLF_FAULT hook) during quantization and
during evaluation, reruns it, and checks that training was not redone.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pgolf.errors import ConfigError
from pgolf.pipeline import run as prun
from pgolf.pipeline import stages
from pgolf.quant import binding
from pgolf.pipeline.commands import parse_seeds
from pgolf.presets import resolve_config
from pgolf.submit.budget import run_code_bytes

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


class FakeStages:
    """Stage fakes writing the files each real stage documents; they count their calls."""

    def __init__(self):
        self.calls = []

    def train(self, cfg, data_dir, tokenizer, run_dir, resume):
        self.calls.append(("train", run_dir.name, resume))
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps({**cfg.to_dict(), "data_dir": str(data_dir),
                                                         "tokenizer": str(tokenizer)}))
        (run_dir / "model.pt").write_bytes(b"weights-%d" % cfg.train.seed)
        (run_dir / "metrics.jsonl").write_text(json.dumps({"step": 1, "train_loss": 5.0, "elapsed_s": 0.1}) + "\n")
        bpb = 2.0 + cfg.train.seed / 1000
        (run_dir / "train_summary.json").write_text(json.dumps(
            {"val_loss": bpb * 0.7, "val_bpb": bpb, "steps": 3, "train_time_s": 0.3}))

    def quantize(self, cfg, run_dir, count_code):
        self.calls.append(("quantize", run_dir.name))
        (run_dir / "artifact.pgz").write_bytes(b"ART")
        (run_dir / "quant.json").write_text(json.dumps({
            "scheme": cfg.quant.scheme, "tensors": [], "artifact_bytes": 3, "code_bytes": 10, "total_bytes": 13,
            "budget_bytes": cfg.quant.budget_bytes, "within_budget": True, "bits_per_param": 2.0}))
        return {}

    def eval(self, cfg, run_dir, data_dir, tokenizer):
        self.calls.append(("eval", run_dir.name))
        s = json.loads((run_dir / "train_summary.json").read_text())
        b = s["val_bpb"] + 0.1
        (run_dir / "eval.json").write_text(json.dumps({
            "tokens": 10, "bytes": 20,
            "neural": {"standard": {"val_loss": b * 0.7, "val_bpb": b},
                       "sliding": {"val_loss": b * 0.69, "val_bpb": b - 0.01, "stride": cfg.eval.stride}},
            "ngram": {"mode": cfg.eval.ngram, "valid": True, "val_loss": b * 0.68, "val_bpb": b - 0.02,
                      "orders": [2, 12]}}))
        return {}

    def names(self):
        return [c[0] for c in self.calls]


@pytest.fixture
def fakes(monkeypatch):
    f = FakeStages()
    monkeypatch.setitem(stages.STAGE_FUNCS, "train", f.train)
    monkeypatch.setitem(stages.STAGE_FUNCS, "quantize", f.quantize)
    monkeypatch.setitem(stages.STAGE_FUNCS, "eval", f.eval)
    monkeypatch.setattr(prun, "artifact_decodes", lambda p: Path(p).read_bytes() == b"ART")
    # the fake artifact holds no header: its model is the run's (pgolf.quant.binding)
    monkeypatch.setattr(binding, "artifact_model", lambda p: binding.run_model(Path(p).parent))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    return f


def cfg(*sets):
    return resolve_config("tiny", sets=list(sets))


def go(tmp_path, c=None, **kw):
    kw.setdefault("report", False)
    kw.setdefault("count_code", run_code_bytes)
    return prun.run_pipeline(c or cfg(), tmp_path / "data", tmp_path / "tok.model", tmp_path / "run", **kw)


def test_runs_every_stage_then_skips_them(tmp_path, fakes):
    res = go(tmp_path, report=True)
    assert fakes.names() == ["train", "quantize", "eval"]
    assert res["report"].is_file() and (tmp_path / "run" / "bpb_stages.png").is_file()
    fakes.calls.clear()
    res = go(tmp_path)
    assert fakes.names() == [] and res["stages"] == [{"train": False, "quantize": False, "eval": False}]


def test_show_eval_sees_each_evaluation_once(tmp_path, fakes):
    """pgolf run passes the eval table printer; it runs after an evaluation, not when eval is skipped."""
    shown = []
    go(tmp_path, show_eval=lambda result, written: shown.append(written))
    assert shown == [[tmp_path / "run" / "eval.json"]]
    go(tmp_path, show_eval=lambda result, written: shown.append(written))
    assert len(shown) == 1


def test_missing_or_stale_outputs_redo_only_later_stages(tmp_path, fakes):
    go(tmp_path)
    run = tmp_path / "run"
    (run / "eval.json").unlink()
    fakes.calls.clear()
    go(tmp_path)
    assert fakes.names() == ["eval"]
    (run / "artifact.pgz").write_bytes(b"corrupt")  # does not decode
    fakes.calls.clear()
    go(tmp_path)
    assert fakes.names() == ["quantize", "eval"]
    # a model newer than the artifact invalidates the artifact
    os.utime(run / "model.pt", ns=(os.stat(run / "artifact.pgz").st_mtime_ns + 10**9,) * 2)
    fakes.calls.clear()
    go(tmp_path)
    assert fakes.names() == ["quantize", "eval"]


def test_changed_settings(tmp_path, fakes):
    go(tmp_path)
    fakes.calls.clear()
    go(tmp_path, cfg("quant.scheme=int6"))
    assert fakes.names() == ["quantize", "eval"]
    fakes.calls.clear()
    go(tmp_path, cfg("quant.scheme=int6", "eval.stride=32"))
    assert fakes.names() == ["eval"]
    fakes.calls.clear()
    with pytest.raises(ConfigError, match="model.mlp_mult"):
        go(tmp_path, cfg("model.mlp_mult=2", "quant.scheme=int6", "eval.stride=32"))
    assert fakes.names() == []
    with pytest.raises(ConfigError, match="quant.rotation_seed"):  # only scheme/codec/budget/bits may change
        go(tmp_path, cfg("quant.rotation_seed=3", "quant.scheme=int6", "eval.stride=32"))
    # settings that do not change the trained model are not a conflict
    go(tmp_path, cfg("train.log_every=7", "quant.scheme=int6", "eval.stride=32"))
    assert fakes.names() == []


def test_force_redoes_everything_from_scratch(tmp_path, fakes):
    go(tmp_path)
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"old")
    fakes.calls.clear()
    go(tmp_path, cfg("model.mlp_mult=2"), force=True)
    assert fakes.names() == ["train", "quantize", "eval"]
    assert fakes.calls[0][2] is False  # not resumed
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_unfinished_training_is_resumed(tmp_path, fakes):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"ckpt")
    go(tmp_path)
    assert fakes.calls[0] == ("train", "run", True)


def test_multi_seed_layout_and_report(tmp_path, fakes):
    res = go(tmp_path, seeds=[3, 1], report=True)
    run = tmp_path / "run"
    assert [d.name for d in res["seed_dirs"]] == ["seed_3", "seed_1"]
    for s in (1, 3):
        assert json.loads((run / f"seed_{s}" / "config.json").read_text())["train"]["seed"] == s
    rep = json.loads((run / "report.json").read_text())
    assert [s["seed"] for s in rep["seeds"]] == [1, 3]
    assert rep["summary"]["ngram_bpb"]["n"] == 2


def test_parse_seeds():
    assert parse_seeds("1337, 42,2024") == [1337, 42, 2024]
    assert parse_seeds(None) is None
    with pytest.raises(ConfigError, match="'x'"):
        parse_seeds("1,x")


def test_run_once_runs_every_stage_without_bookkeeping(tmp_path, fakes):
    """What a generated train_gpt.py runs: each stage once, from scratch, no pipeline.json; the
    script does not carry pgolf run's skipping and stamps (pgolf.pipeline.run)."""
    from pgolf.submit.bundle import bundled_modules

    env = stages.run_once(cfg(), tmp_path / "data", tmp_path / "tok.model", tmp_path / "run", run_code_bytes)
    assert env.is_main and fakes.calls[0] == ("train", "run", False)
    assert fakes.names() == ["train", "quantize", "eval"]
    assert not (tmp_path / "run" / "pipeline.json").exists()
    assert "pgolf.pipeline.stages" in bundled_modules() and "pgolf.pipeline.run" not in bundled_modules()


def test_fault_hook_kills_the_process(tmp_path):
    code = "from pgolf.pipeline.stages import fault_point; fault_point('before-eval'); print('alive')"
    env = {**os.environ, "PGOLF_FAULT": "before-eval"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == -9 and "alive" not in r.stdout
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={k: v for k, v in os.environ.items() if k != "PGOLF_FAULT"})
    assert r.returncode == 0 and "alive" in r.stdout


# ------------------------------------------------------------------ end to end (real stages)


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _pgolf(args, fault=None, timeout=300):
    env = {k: v for k, v in os.environ.items() if k not in ("PGOLF_FAULT", "WORLD_SIZE", "RANK")}
    if fault:
        env["PGOLF_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "pgolf", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


@pytest.fixture
def small_data(tmp_path):
    """A few hundred K tokens of the shared FineWeb sample with its tokenizer (skips when absent)."""
    if not (SHARED / "fineweb_sp1024").is_dir():
        pytest.skip("shared development data not present")
    from pgolf.data.shards import read_shard, write_shard

    d = tmp_path / "data"
    d.mkdir()
    write_shard(d / "fineweb_train_000000.bin", read_shard(SHARED / "fineweb_sp1024" / "fineweb_train_000000.bin")[:100_000])
    write_shard(d / "fineweb_val_000000.bin", read_shard(SHARED / "fineweb_sp1024" / "fineweb_val_000000.bin")[:8192])
    (d / "tokenizer.model").write_bytes((SHARED / "tokenizers" / "fineweb_1024_bpe.model").read_bytes())
    return d


TINY_SETS = ["max_wallclock_seconds=3", "iterations=2", "warmup_steps=0", "model.num_layers=2",
             "model.value_embed_layers=1", "model.xsa_last_n=1", "model.model_dim=128", "eval.ngram_max_order=4",
             "train.device=cpu", "train.batch_tokens=2048", "train.micro_batch_seqs=8"]


def test_real_stages_resume_after_a_crash(tmp_path, small_data, monkeypatch):
    """In process, real stages: a crash in quantization, then in evaluation; training is never redone."""
    pytest.importorskip("pgolf.quant.quantize")
    pytest.importorskip("pgolf.eval.commands")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    c = resolve_config("tiny", sets=TINY_SETS + ["eval.stride=0", "eval.ngram=none"])
    run, tok = tmp_path / "run", small_data / "tokenizer.model"
    real = dict(stages.STAGE_FUNCS)

    def crash(*a, **k):
        raise RuntimeError("simulated crash")

    monkeypatch.setitem(stages.STAGE_FUNCS, "quantize", crash)
    with pytest.raises(RuntimeError):
        prun.run_pipeline(c, small_data, tok, run, report=False, count_code=run_code_bytes)
    assert prun.train_done(run) and not (run / "artifact.pgz").exists()
    model_hash, log_text = _sha(run / "model.pt"), (run / "train.log").read_text()
    monkeypatch.setitem(stages.STAGE_FUNCS, "quantize", real["quantize"])
    monkeypatch.setitem(stages.STAGE_FUNCS, "eval", crash)
    with pytest.raises(RuntimeError):
        prun.run_pipeline(c, small_data, tok, run, report=False, count_code=run_code_bytes)
    assert prun.quant_done(run, c) and not (run / "eval.json").exists()
    monkeypatch.setitem(stages.STAGE_FUNCS, "eval", real["eval"])
    res = prun.run_pipeline(c, small_data, tok, run, report=False, count_code=run_code_bytes)
    assert res["stages"] == [{"train": False, "quantize": False, "eval": True}]
    assert prun.eval_done(run, c, small_data)
    assert _sha(run / "model.pt") == model_hash and (run / "train.log").read_text() == log_text
    # the report of a real run quotes its eval.json and train_summary.json
    from pgolf.pipeline.report import write_report

    md = write_report(run).read_text()
    row = next(line for line in md.splitlines() if line.startswith(f"| {c.train.seed} |"))
    cells = [x.strip() for x in row.strip("|").split("|")]
    ev = json.loads((run / "eval.json").read_text())
    summary = json.loads((run / "train_summary.json").read_text())
    assert float(cells[3]) == round(summary["val_bpb"], 6)
    assert float(cells[4]) == round(ev["neural"]["standard"]["val_bpb"], 6)
    assert json.loads((run / "report.json").read_text())["seeds"][0]["post_quant_bpb"] == \
        ev["neural"]["standard"]["val_bpb"]


@pytest.mark.slow
def test_killed_run_resumes_without_retraining(tmp_path, small_data):
    """The CLI killed by SIGKILL before quantization, then before evaluation, then rerun to the end."""
    pytest.importorskip("pgolf.quant.quantize")
    pytest.importorskip("pgolf.eval.commands")
    run = tmp_path / "run"
    args = ["run", "--preset", "tiny", "--data", str(small_data), "--out", str(run), "--no-report"]
    for item in TINY_SETS + ["eval.ngram=causal", "eval.stride=128"]:
        args += ["--set", item]
    r = _pgolf(args, fault="before-quantize")
    assert r.returncode == -9, r.stderr[-2000:]
    assert (run / "train_summary.json").is_file() and not (run / "artifact.pgz").exists()
    model_hash, log_text = _sha(run / "model.pt"), (run / "train.log").read_text()
    mtime = (run / "model.pt").stat().st_mtime_ns

    r = _pgolf(args, fault="before-eval")
    assert r.returncode == -9, r.stderr[-2000:]
    assert "train skipped" in r.stdout and (run / "artifact.pgz").is_file() and not (run / "eval.json").exists()

    r = _pgolf(args)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "train skipped" in r.stdout and "quantize skipped" in r.stdout
    ev = json.loads((run / "eval.json").read_text())
    assert ev["neural"]["standard"]["val_bpb"] > 0
    assert _sha(run / "model.pt") == model_hash and (run / "model.pt").stat().st_mtime_ns == mtime
    assert (run / "train.log").read_text() == log_text  # no new training lines


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    """pgolf demo (short training cap): summary table with every stage and the report path."""
    pytest.importorskip("pgolf.eval.commands")
    r = _pgolf(["demo", "--out", str(tmp_path / "demo"), "--wallclock", "10"], timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    for label in ("pre-quant val_bpb", "post-quant val_bpb (standard)", "n-gram val_bpb", "artifact bytes", "budget"):
        assert label in r.stdout
    assert f"report: {tmp_path / 'demo' / 'report.md'}" in r.stdout
    ev = json.loads((tmp_path / "demo" / "eval.json").read_text())
    assert f"{ev['ngram']['val_bpb']:.4f}" in r.stdout
