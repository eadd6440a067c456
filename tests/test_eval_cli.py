"""Tests of ``pgolf eval`` / :func:`pgolf.eval.commands.run_eval` on a tiny run directory
(own tokenizer, shards and random model): eval.json layout, agreement with
pgolf.model.bpb, artifact input, n-gram labels and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pgolf.cli import main
from pgolf.config import set_field
from pgolf.data.shards import write_shard
from pgolf.data.tokenizer import BOS_ID, byte_tables, load_tokenizer, train_tokenizer
from pgolf.model.bpb import evaluate
from pgolf.eval.commands import format_table, parse_orders, run_eval
from pgolf.model.gpt import GPT
from pgolf.presets import get_preset

TEXTS = [
    "The quick brown fox jumps over the lazy dog near the river bank, twice a day.",
    "Numbers like 1234 and 5678 appear in ledgers; the clerk counts them slowly.",
    "A small language model predicts the next token from the tokens before it.",
    "Compression and prediction are two sides of the same coin, said the professor.",
    "Rain fell on the quiet town while the baker prepared bread for the morning.",
] * 4


def tiny_run_config():
    cfg = get_preset("tiny")
    for k, v in dict(vocab_size=320, num_layers=2, model_dim=32, num_heads=4, num_kv_heads=2, rope_dims=4,
                     bigram_buckets=64, bigram_dim=8, value_embed_dim=8, value_embed_layers="1", xsa_last_n=1).items():
        set_field(cfg, f"model.{k}", v)
    set_field(cfg, "train.seq_len", 32)
    set_field(cfg, "eval.batch_seqs", 8)
    return cfg


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalrun")
    data = root / "data"
    data.mkdir()
    train_tokenizer(TEXTS, data / "tokenizer.model", vocab_size=320)
    sp = load_tokenizer(data / "tokenizer.model")
    ids = []
    for t in TEXTS:
        ids += [BOS_ID] + sp.encode(t)
    write_shard(data / "fineweb_val_000000.bin", np.array(ids, dtype=np.uint16))
    write_shard(data / "fineweb_train_000000.bin", np.array(ids, dtype=np.uint16))
    cfg = tiny_run_config()
    torch.manual_seed(0)
    model = GPT(cfg.model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    run = root / "run"
    run.mkdir()
    torch.save(model.state_dict(), run / "model.pt")
    (run / "config.json").write_text(json.dumps({**cfg.to_dict(), "data_dir": str(data),
                                                 "tokenizer": str(data / "tokenizer.model")}))
    return run


def _direct(run_dir, stride=None):
    cfg = json.loads((run_dir / "config.json").read_text())
    from pgolf.config import RunConfig
    from pgolf.data.shards import load_tokens

    rc = RunConfig.from_dict(cfg)
    model = GPT(rc.model)
    model.load_state_dict(torch.load(run_dir / "model.pt", weights_only=True))
    tokens = load_tokens(cfg["data_dir"], "val")
    return evaluate(model, tokens, byte_tables(cfg["tokenizer"]), seq_len=32, stride=stride, progress=False)


def test_run_dir_eval_json_matches_direct_evaluation(run_dir, tmp_path):
    out = tmp_path / "e.json"
    res = run_eval(run_dir, stride=8, ngram="none", out=out, progress=False, echo=False)
    on_disk = json.loads(out.read_text())
    assert on_disk == json.loads(json.dumps(res))
    std, sl = _direct(run_dir), _direct(run_dir, stride=8)
    assert res["tokens"] == std.tokens and res["bytes"] == std.bytes
    assert abs(res["neural"]["standard"]["val_bpb"] - std.bpb) < 1e-9
    assert abs(res["neural"]["sliding"]["val_loss"] - sl.loss) < 1e-9
    assert res["neural"]["sliding"]["stride"] == 8
    assert res["ngram"]["mode"] == "none" and res["source_kind"] == "checkpoint"
    assert {"load_s", "standard_s", "sliding_s", "total_s"} <= set(res["timings"])


def test_default_out_is_in_run_dir_and_max_tokens(run_dir):
    res = run_eval(run_dir, stride=0, ngram="none", max_tokens=100, progress=False, echo=False)
    assert (run_dir / "eval.json").is_file()
    assert res["tokens"] == 96 and "sliding" not in res["neural"]


@pytest.mark.parametrize("mode", ["causal", "two-pass"])
def test_ngram_block_and_labels(run_dir, tmp_path, capsys, mode):
    pytest.importorskip("pgolf.eval.ngram")
    res = run_eval(run_dir, stride=16, ngram=mode, orders=(2, 4), out=tmp_path / "e.json", progress=False)
    ng = res["ngram"]
    assert ng["mode"] == mode and ng["orders"] == [2, 4] and np.isfinite(ng["val_bpb"])
    printed = capsys.readouterr().out
    if mode == "causal":
        assert ng["valid"] is True and "leaky" not in printed
    else:
        assert ng["valid"] is False and "leaky (not a valid compression rate)" in printed
        assert "leaky (not a valid compression rate)" in format_table(res)


def test_artifact_input(run_dir, tmp_path):
    art = pytest.importorskip("pgolf.quant.format.artifact")
    cfg = tiny_run_config()
    state = torch.load(run_dir / "model.pt", weights_only=True)
    path = tmp_path / "model.pgz"
    art.write_artifact(path, art.encode(state, cfg))
    cfg_json = json.loads((run_dir / "config.json").read_text())
    res = run_eval(path, data_dir=cfg_json["data_dir"], tokenizer=cfg_json["tokenizer"], stride=0, ngram="none",
                   progress=False, echo=False)
    assert res["source_kind"] == "artifact" and (tmp_path / "eval.json").is_file()
    direct = _direct(run_dir)
    assert abs(res["neural"]["standard"]["val_bpb"] - direct.bpb) < 0.05  # small tensors are stored fp16


def test_cli_prints_table(run_dir, tmp_path, capsys):
    rc = main(["eval", str(run_dir), "--stride", "8", "--ngram", "none", "--out", str(tmp_path / "x.json"), "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "neural standard" in out and "neural sliding/8" in out


def test_cli_errors_are_one_line(tmp_path, capsys, run_dir):
    assert main(["eval", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("pgolf: error:") and "\n" not in err
    assert main(["eval", str(run_dir), "--data", str(tmp_path / "nodata"), "--quiet"]) == 1
    assert "data directory not found" in capsys.readouterr().err
    assert main(["eval", str(run_dir), "--orders", "x-3"]) == 1
    assert "--orders" in capsys.readouterr().err


def test_parse_orders():
    assert parse_orders("2-12") == (2, 12) and parse_orders("5") == (5, 5)


def test_orders_below_two_are_refused_before_any_work():
    from pgolf.errors import ConfigError

    for bad in ("1-12", "3-2", "2-65"):
        with pytest.raises(ConfigError, match="2 <= MIN <= MAX <= 64"):
            parse_orders(bad)


def test_two_pass_reads_the_run_s_bucket_count_and_min_count(run_dir, tmp_path, monkeypatch):
    """eval.two_pass_buckets / two_pass_min_count reach the n-gram; bad orders fail before any work."""
    import json

    cfg_path = run_dir / "config.json"
    saved = cfg_path.read_text()
    cfg = json.loads(saved)
    cfg["eval"]["two_pass_buckets"], cfg["eval"]["two_pass_min_count"] = 4096, 3
    cfg_path.write_text(json.dumps(cfg))
    try:
        res = run_eval(run_dir, stride=0, ngram="loo", orders=(2, 4), out=tmp_path / "e.json", progress=False,
                       echo=False)
        assert res["ngram"]["memory_bytes"] == 2 * 3 * 4096 * 4  # two uint32 tables per order, 4096 buckets
        from pgolf.eval import harness

        monkeypatch.setattr(harness, "_neural", lambda *a, **k: pytest.fail("neural pass ran before the check"))
        with pytest.raises(Exception, match="2 <= MIN"):
            run_eval(run_dir, stride=0, ngram="two-pass", orders=(1, 4), out=tmp_path / "f.json", progress=False)
    finally:
        cfg_path.write_text(saved)
