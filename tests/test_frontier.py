"""Tests for ``pgolf frontier``: inputs, the bit ladder, resume after a crash or a kill, the table.

The end-to-end tests run real training, quantization and evaluation at micro size on a
slice of the shared FineWeb sample (skipped without it). The fast one crashes the run in
process during a cell's evaluation and resumes it; the slow one (2 sizes x record and
turbo-rd) runs the CLI in a subprocess, SIGKILLs it mid-run and checks that the resumed
table equals the table of an uninterrupted run.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pgolf.cli import build_parser, main
from pgolf.errors import BudgetError, ConfigError
from pgolf.pipeline import frontier as fr
from pgolf.pipeline.frontier_table import markdown
from pgolf.submit.budget import run_code_bytes

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"

MICRO = ["iterations=2", "warmup_steps=0", "train.batch_tokens=1024", "train.micro_batch_seqs=4",
         "train.seq_len=256", "train.device=cpu", "model.num_layers=1", "model.value_embed_layers=",
         "model.xsa_last_n=1", "model.mlp_mult=2", "model.num_heads=2", "model.num_kv_heads=1",
         "model.bigram_buckets=256", "model.bigram_dim=16", "model.value_embed_dim=16", "eval.batch_seqs=8"]
SIZES = ["model_dim=32", "model_dim=48"]
TIME_KEYS = ("train_time_s", "calibration_s")


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture
def micro_data(tmp_path_factory):
    """A slice of the shared FineWeb sample with its tokenizer (skips when absent)."""
    if not (SHARED / "fineweb_sp1024").is_dir():
        pytest.skip("shared development data not present")
    from pgolf.data.shards import read_shard, write_shard

    d = tmp_path_factory.mktemp("data")
    write_shard(d / "fineweb_train_000000.bin", read_shard(SHARED / "fineweb_sp1024" / "fineweb_train_000000.bin")[:40_000])
    write_shard(d / "fineweb_val_000000.bin", read_shard(SHARED / "fineweb_sp1024" / "fineweb_val_000000.bin")[:2049])
    (d / "tokenizer.model").write_bytes((SHARED / "tokenizers" / "fineweb_1024_bpe.model").read_bytes())
    return d


def spec(data, schemes, **kw):
    kw = {"wallclock": 600.0, "stride": 0, "calib_batches": 1, "sets": list(MICRO), **kw}
    return fr.FrontierSpec(preset="tiny", sizes=[fr.parse_size(s) for s in SIZES], schemes=schemes,
                           data_dir=str(data), tokenizer=str(data / "tokenizer.model"), **kw)


def rows_without_times(path: Path) -> list[dict]:
    rows = json.loads(path.read_text())["rows"]
    return [{k: v for k, v in r.items() if k not in TIME_KEYS} for r in rows]


# ------------------------------------------------------------------ inputs


def test_parse_size_and_schemes():
    s = fr.parse_size("model_dim=256, num_layers=6")
    assert s.sets == ("model_dim=256", "num_layers=6") and s.name == "model_dim-256_num_layers-6"
    assert fr.parse_size("model_dim=64,value_embed_layers=2,3,num_layers=4").sets == (
        "model_dim=64", "value_embed_layers=2,3", "num_layers=4")
    for bad in ("", "model_dim", "=3", "4,model_dim=2", " , "):
        with pytest.raises(ConfigError, match="--size"):
            fr.parse_size(bad)
    assert fr.parse_schemes("record,turbo-rd") == ["record", "turbo-rd"]
    for bad in ("record,foo", "record,record", ","):
        with pytest.raises(ConfigError, match="--schemes"):
            fr.parse_schemes(bad)


def test_ladder_follows_the_rule():
    """record: matrices b, embeddings b + 1 (at most 8), b = 8 .. 2; intN: every role b = N .. 2."""
    from pgolf.quant.calibrate.allocation import QUANT_ROLES

    rec = fr.ladder("record")
    assert [r["attn"] for r in rec] == [8, 7, 6, 5, 4, 3, 2]
    assert [r["embed"] for r in rec] == [8, 8, 7, 6, 5, 4, 3]
    assert all(set(r) == set(QUANT_ROLES) and len({r[k] for k in QUANT_ROLES if k != "embed"}) == 1 for r in rec)
    assert [set(r.values()) for r in fr.ladder("int6")] == [{6}, {5}, {4}, {3}, {2}]
    assert fr.ladder("turbo-rd") == []


class FakeSizer:
    """Bytes grow with the bit width: 1,000 per bit of the attention role."""

    def __init__(self):
        self.asked = []

    def bytes_at(self, scheme, bits):
        self.asked.append(bits["attn"])
        return 1000 * bits["attn"] + 7


def test_pick_bits_takes_the_largest_setting_that_fits():
    z = FakeSizer()
    bits, tried = fr.pick_bits(z, "record", 5100, "x")
    assert bits["attn"] == 5 and tried == [8007, 7007, 6007, 5007]
    bits, tried = fr.pick_bits(FakeSizer(), "int6", 2006, "x")
    assert bits is None and tried == [6007, 5007, 4007, 3007, 2007]  # every setting tried: does not fit


def test_bad_input_is_one_line(tmp_path, capsys, micro_data):
    base = ["frontier", "--data", str(micro_data), "--out", str(tmp_path / "f"), "--dry-run"]
    cases = [(["--size", "modl_dim=32"], "unknown config key 'modl_dim'"),
             (["--size", "model_dim=abc"], "bad value 'abc'"),
             (["--size", "model_dim=32", "--schemes", "record,nope"], "unknown scheme 'nope'"),
             (["--size", "model_dim=32", "--model-bytes", "0"], "--model-bytes must be a positive"),
             (["--size", "model_dim=32", "--wallclock", "-1"], "--wallclock must be > 0"),
             (["--size", "model_dim=32", "--wallclock", "nan"], "--wallclock must be > 0"),
             (["--size", "model_dim=32", "--eval-tokens", "-5"], "--eval-tokens must be >= 0"),
             (["--size", "model_dim=32", "--qat", "bogus"], None),
             (["--size", "model_dim=32", "--size", "model_dim=32"], "each --size must differ")]
    for extra, msg in cases:
        if msg is None:  # argparse's own choice check: usage + one error line, exit 2
            with pytest.raises(SystemExit) as e:
                main(base + extra)
            assert e.value.code == 2 and "invalid choice: 'bogus'" in capsys.readouterr().err
            continue
        assert main(base + extra) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("pgolf: error:") and msg in err[0], err
    assert not (tmp_path / "f").exists()
    sets = [x for item in MICRO for x in ("--set", item)]
    assert main(base + ["--size", "model_dim=48", "--size", "model_dim=32"] + sets) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("model_dim-32:") and out[1].startswith("model_dim-48:")  # smallest first


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["frontier", "--help"])
    text = capsys.readouterr().out
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["frontier"]
    for action in sub._actions:
        assert action.help, action.option_strings
        for opt in action.option_strings:
            assert opt in text
    assert "does not fit" in text and "resumes" in text


def test_markdown_marks_cells_that_do_not_fit():
    rows = [{"size": "a", "params": 10, "steps": 1, "train_time_s": 1.0, "pre_quant_bpb": 2.0, "scheme": "int6",
             "status": fr.NO_FIT, "setting": None, "model_bytes_budget": 5, "artifact_bytes": None,
             "bits_per_param": None, "post_quant_bpb": None, "penalty": None, "method": None}]
    md = markdown(rows, {"preset": "tiny", "model_bytes": 5})
    assert "| int6 | does not fit | — |" in md and "no cell fits the budget" in md


def test_changed_settings_are_refused(tmp_path, micro_data):
    s = spec(micro_data, ["int6"])
    fr.check_same_settings(tmp_path, s)
    fr.check_same_settings(tmp_path, spec(micro_data, ["int8", "int6"]))  # more schemes: fine
    with pytest.raises(ConfigError, match="wallclock=600.0, not 30.0"):
        fr.check_same_settings(tmp_path, spec(micro_data, ["int6"], wallclock=30.0))


def test_a_second_frontier_on_a_live_folder_is_refused(tmp_path, micro_data):
    from pgolf.runlock import LockedError, run_lock

    out = tmp_path / "f"
    with run_lock(out, "pgolf frontier (the first)"):
        with pytest.raises(LockedError, match="the first"):
            fr.run_frontier(spec(micro_data, ["int6"]), out, run_code_bytes)
    assert not out.exists()  # the refused one wrote nothing (the lock removes the folder it made)


def test_qat_option_trains_with_the_chosen_grid(tmp_path):
    """--qat off trains float; --qat turbo-rd attaches turbo-rd's own fake quantization (its
    rotated uniform grid) to every quantized weight; --qat preset keeps tiny's TurboQuant QAT."""
    from pgolf.model.gpt import GPT
    from pgolf.quant.schemes.qat import fake_quant_modules, prepare_qat
    from pgolf.quant.schemes.qat_grids import TurboRDFakeQuant

    def cfg(qat):
        s = fr.FrontierSpec(preset="tiny", sizes=[], schemes=["turbo-rd"], data_dir=".", tokenizer="t", qat=qat,
                            sets=list(MICRO) + ["quant.fp16_max_numel=256"])
        return fr.size_config(s, fr.parse_size("model_dim=32"))

    assert cfg("off").train.qat is False
    assert cfg("preset").train.qat is True and cfg("preset").quant.scheme == "turbo"
    c = cfg("turbo-rd")
    assert c.train.qat is True and c.quant.scheme == "turbo-rd"
    model = GPT(c.model)
    prepare_qat(model, c.quant)
    mods = list(fake_quant_modules(model))
    assert len(mods) >= 4 and all(isinstance(m, TurboRDFakeQuant) for _, m in mods)


# ------------------------------------------------------------------ end to end


def test_crashed_frontier_resumes_to_the_same_cells(tmp_path, micro_data, monkeypatch):
    """2 sizes x int6/int8, real stages; a crash in the third cell's evaluation (after its artifact is written), then a rerun:
    nothing finished is redone, the half-done cell is redone, and the table has every cell."""
    import pgolf.eval.harness as harness

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    out, s = tmp_path / "f", spec(micro_data, ["int6", "int8"], model_bytes=40_000)
    real, calls = harness.run_eval, []

    def crash_on_fifth(*a, **k):  # float model, cell, cell, float model of size 2, then its first cell
        calls.append(a[0])
        if len(calls) == 5:
            raise RuntimeError("simulated crash")
        return real(*a, **k)

    monkeypatch.setattr(harness, "run_eval", crash_on_fifth)
    with pytest.raises(RuntimeError):
        fr.run_frontier(s, out, run_code_bytes)
    small, big = out / "model_dim-32", out / "model_dim-48"
    assert (small / "int6" / "cell.json").is_file() and (small / "int8" / "cell.json").is_file()
    assert (big / "int6" / "quant.json").is_file() and not (big / "int6" / "cell.json").exists()
    kept = {p: _sha(p) for p in [small / "int6" / "cell.json", small / "int8" / "cell.json",
                                 small / "train" / "model.pt", big / "train" / "model.pt"]}
    half = (big / "int6" / "artifact.pgz").stat().st_mtime_ns

    monkeypatch.setattr(harness, "run_eval", real)
    rows = fr.run_frontier(s, out, run_code_bytes)
    assert {p: _sha(p) for p in kept} == kept  # no size retrained, no finished cell redone
    assert (big / "int6" / "artifact.pgz").stat().st_mtime_ns != half
    assert [(r["size"], r["scheme"], r["status"]) for r in rows] == [
        ("model_dim-32", "int6", "ok"), ("model_dim-32", "int8", "ok"),
        ("model_dim-48", "int6", "ok"), ("model_dim-48", "int8", "ok")]
    table = json.loads((out / "frontier.json").read_text())
    for r in table["rows"]:  # every number is the cell's own
        cell = json.loads((out / r["size"] / r["scheme"] / "cell.json").read_text())
        q = json.loads((out / r["size"] / r["scheme"] / "quant.json").read_text())
        ev = json.loads((out / r["size"] / r["scheme"] / "eval.json").read_text())
        assert r["artifact_bytes"] == q["artifact_bytes"] == cell["artifact_bytes"] <= 40_000
        assert r["artifact_bytes"] == (out / r["size"] / r["scheme"] / "artifact.pgz").stat().st_size
        assert q["artifact_sha256"] == ev["artifact_sha256"] == _sha(out / r["size"] / r["scheme"] / "artifact.pgz")
        assert r["post_quant_bpb"] == ev["score"]["val_bpb"]
        assert r["setting"] == f"int{q['role_bits']['attn']}" and set(q["role_bits"].values()) == {
            int(r["setting"][3:])}
    md = (out / "frontier.md").read_text()
    assert md.count("| model_dim-") == 4
    assert (out / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a cell.json that is not valid JSON is not a finished cell: only that cell is redone
    (big / "int8" / "cell.json").write_text("{truncated")
    kept = {p: _sha(p) for p in (out / "model_dim-32").rglob("*") if p.is_file()}
    rows_again = fr.run_frontier(s, out, run_code_bytes)
    assert {p: _sha(p) for p in kept} == kept and rows_again == rows
    assert json.loads((big / "int8" / "cell.json").read_text())["status"] == "ok"
    # the largest setting that fits: one bit more would not have fitted
    for r in table["rows"]:
        cell = json.loads((out / r["size"] / r["scheme"] / "cell.json").read_text())
        assert cell["tried_bytes"][-1] == r["artifact_bytes"]  # sized exactly as written
        assert all(b > 40_000 for b in cell["tried_bytes"][:-1])


def test_budget_below_the_smallest_artifact(tmp_path, micro_data, monkeypatch):
    """Nothing fits the smallest size: one clear error, the larger size never trained."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    out = tmp_path / "f"
    with pytest.raises(BudgetError, match="below the smallest artifact of the smallest size model_dim-32"):
        fr.run_frontier(spec(micro_data, ["int8"], model_bytes=2_000), out, run_code_bytes)
    cell = json.loads((out / "model_dim-32" / "int8" / "cell.json").read_text())
    assert cell["status"] == fr.NO_FIT and len(cell["tried_bytes"]) == 7 and min(cell["tried_bytes"]) > 2_000
    assert not (out / "model_dim-48").exists()
    assert "does not fit" in (out / "frontier.md").read_text()


def test_calibration_is_reused_only_for_the_same_weights(tmp_path, micro_data):
    """Calibrating the same weights, data and batch count again returns the last calibration;
    anything else (other weights, another batch count) calibrates again."""
    from pgolf.model.gpt import GPT
    from pgolf.quant.schemes import grouped as schemes

    s = spec(micro_data, ["record"])
    cfg, run = fr.size_config(s, s.sizes[0]), tmp_path / "run"
    torch.manual_seed(0)
    sd = GPT(cfg.model).state_dict()
    schemes._LAST_CALIBRATION.clear()
    first = schemes.run_calibration(run, cfg, sd, s.data_dir, 1, log=None)
    assert schemes.run_calibration(run, cfg, sd, s.data_dir, 1, log=None) is first
    assert schemes.run_calibration(run, cfg, sd, s.data_dir, 2, log=None) is not first
    other = {k: v.clone() for k, v in sd.items()}
    name = next(k for k, v in other.items() if v.dim() == 2)
    other[name][0, 0] += 1.0
    assert schemes.run_calibration(run, cfg, other, s.data_dir, 1, log=None) is not first
    lines = []  # one entry is kept: `other` replaced `first`
    again = schemes.run_calibration(run, cfg, sd, s.data_dir, 1, log=lines.append)
    assert again is not first and "reused" not in lines[0]
    assert schemes.run_calibration(run, cfg, sd, s.data_dir, 1, log=lines.append) is again
    assert "calibration: reused" in lines[1]
    # what is reused is what a fresh calibration gives
    assert again.hessians.keys() == first.hessians.keys()
    assert all(torch.equal(again.hessians[k], first.hessians[k]) for k in first.hessians)
    assert again.sensitivity == first.sensitivity


def _cli_args(data, out):
    args = ["frontier", "--data", str(data), "--out", str(out), "--schemes", "record,turbo-rd",
            "--model-bytes", "60000", "--wallclock", "600", "--stride", "128", "--calib-batches", "1"]
    for s in SIZES:
        args += ["--size", s]
    for item in MICRO:
        args += ["--set", item]
    return args


def _env():
    return {k: v for k, v in os.environ.items() if k not in ("PGOLF_FAULT", "WORLD_SIZE", "RANK")}


@pytest.mark.slow
def test_killed_cli_frontier_resumes_to_the_same_table(tmp_path, micro_data):
    """2x2 (record, turbo-rd) through the CLI: SIGKILL once the second size starts training,
    rerun, and the table equals an uninterrupted run's; the first size is not redone."""
    ref = subprocess.run([sys.executable, "-m", "pgolf", *_cli_args(micro_data, tmp_path / "ref")], cwd=REPO,
                         env=_env(), capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-3000:]
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "pgolf", *_cli_args(micro_data, out)], cwd=REPO, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "model_dim-48: train" in line:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -9, "".join(seen[-20:])
    assert not (out / "frontier.json").exists() and not (out / "model_dim-48" / "size.json").exists()
    first = _sha(out / "model_dim-32" / "record" / "cell.json")
    r = subprocess.run([sys.executable, "-m", "pgolf", *_cli_args(micro_data, out)], cwd=REPO, env=_env(),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "model_dim-32: trained" in r.stdout and "model_dim-32/record: done (ok), skipped" in r.stdout
    assert _sha(out / "model_dim-32" / "record" / "cell.json") == first
    assert rows_without_times(out / "frontier.json") == rows_without_times(tmp_path / "ref" / "frontier.json")
