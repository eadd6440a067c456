"""``pgolf quantize``: run dir -> artifact.pgz + quant.json; budget; --inspect; errors exit 1."""

import json

import pytest
import torch

from pgolf.cli import main
from pgolf.presets import get_preset


def small_model():
    """``(RunConfig, GPT)``: a 2-layer, 64-wide tiny model whose matrices are N(0, 0.05)."""
    from pgolf.model.gpt import GPT

    cfg = get_preset("tiny")
    m = cfg.model
    m.num_layers, m.model_dim, m.num_heads, m.num_kv_heads = 2, 64, 4, 2
    m.bigram_buckets, m.bigram_dim, m.value_embed_dim, m.value_embed_layers, m.xsa_last_n = 64, 16, 16, (1,), 1
    cfg.quant.fp16_max_numel = 1024
    torch.manual_seed(0)
    model = GPT(cfg.model)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.05)
    return cfg, model


def _make_run(path):
    cfg, model = small_model()
    path.mkdir()
    d = cfg.to_dict()
    d.update(data_dir="data", tokenizer="tok.model")
    (path / "config.json").write_text(json.dumps(d))
    torch.save(model.state_dict(), path / "model.pt")
    return cfg, model


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    p = tmp_path_factory.mktemp("q") / "run"
    _make_run(p)
    return p


def test_quantize_writes_artifact_and_summary(run_dir, capsys):
    assert main(["quantize", str(run_dir)]) == 0
    q = json.loads((run_dir / "quant.json").read_text())
    art = (run_dir / "artifact.pgz").stat().st_size
    assert q["scheme"] == "turbo" and q["artifact_bytes"] == art
    assert q["total_bytes"] == q["artifact_bytes"] + q["code_bytes"] and q["code_bytes"] > 0
    assert q["within_budget"] and q["budget_bytes"] == 16_000_000
    from pgolf.submit.budget import code_bytes
    from pgolf.submit.bundle import build_script

    run_config = json.loads((run_dir / "config.json").read_text())
    assert q["code_bytes"] == code_bytes(run_config) == len(build_script(run_config))
    assert abs(q["bits_per_param"] - 8 * art / q["params"]) < 1e-9
    by = {t["name"]: t for t in q["tensors"]}
    assert by["blocks.0.mlp.up.weight"]["bits"] == 2 and by["blocks.0.attn.q.weight"]["bits"] == 3
    assert by["tok_emb.weight"]["bits"] == 4
    assert all(t["kind"] == "fp32" for t in q["tensors"] if t["role"] == "control")
    assert all(set(t) >= {"name", "role", "bits", "numel", "rel_mse", "bytes"} for t in q["tensors"])
    assert "artifact.pgz" in capsys.readouterr().out


def test_scheme_bits_codec_flags(run_dir):
    assert main(["quantize", str(run_dir), "--scheme", "int6", "--bits", "embed=8", "--codec", "none"]) == 0
    q = json.loads((run_dir / "quant.json").read_text())
    by = {t["name"]: t for t in q["tensors"]}
    assert q["scheme"] == "int6" and q["codec"] == "none"
    assert by["blocks.0.mlp.up.weight"]["bits"] == 6 and by["tok_emb.weight"]["bits"] == 8


def test_inspect_and_model_check(run_dir, capsys):
    assert main(["quantize", str(run_dir)]) == 0
    capsys.readouterr()
    assert main(["quantize", "--inspect", str(run_dir / "artifact.pgz")]) == 0
    out = capsys.readouterr().out
    assert "scheme: turbo" in out and "2L/64d" in out
    from pgolf.errors import ArtifactError
    from pgolf.quant.format.artifact import load_artifact

    seed = get_preset("seed").model
    with pytest.raises(ArtifactError, match="different model config"):
        load_artifact(run_dir / "artifact.pgz", expected_model=seed)


def test_over_budget_writes_nothing_and_exits_1(tmp_path, capsys):
    rd = tmp_path / "r"
    _make_run(rd)
    assert main(["quantize", str(rd), "--budget", "1000"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("pgolf: error: over budget") and "\n" not in err
    assert not (rd / "artifact.pgz").exists() and not (rd / "quant.json").exists()
    assert main(["quantize", str(rd), "--budget", "1000", "--allow-over-budget"]) == 0
    assert json.loads((rd / "quant.json").read_text())["within_budget"] is False


@pytest.mark.parametrize("mutate", ["truncate", "flip", "magic", "missing"])
def test_inspect_rejects_bad_artifacts_with_one_line(run_dir, tmp_path, capsys, mutate):
    assert main(["quantize", str(run_dir)]) == 0
    data = bytearray((run_dir / "artifact.pgz").read_bytes())
    bad = tmp_path / "bad.pgz"
    if mutate == "truncate":
        data = data[: len(data) // 2]
    elif mutate == "flip":
        data[40] ^= 0xFF
    elif mutate == "magic":
        data[0:2] = b"XX"
    if mutate != "missing":
        bad.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["quantize", "--inspect", str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("pgolf: error:") and "bad.pgz" in err and "\n" not in err


def test_bad_flags_exit_1(run_dir, tmp_path, capsys):
    assert main(["quantize", str(run_dir), "--bits", "mlp_up=9"]) == 1
    assert main(["quantize", str(run_dir), "--bits", "control=4"]) == 1
    assert main(["quantize", str(tmp_path / "nope")]) == 1
    assert main(["quantize"]) == 1
    errs = capsys.readouterr().err.strip().splitlines()
    assert len(errs) == 4 and all(e.startswith("pgolf: error:") for e in errs)


@pytest.mark.parametrize("edit, words", [({"num_heads": 3}, "not divisible by num_heads"),
                                         ({"model_dim": 96, "num_heads": 4}, "do not match the model"),
                                         ({"num_layers": 3}, "do not match the model")])
def test_a_config_that_is_not_the_weights_model_is_one_line(tmp_path, capsys, edit, words):
    rd = tmp_path / "r"
    _make_run(rd)
    d = json.loads((rd / "config.json").read_text())
    d["model"].update(edit)
    (rd / "config.json").write_text(json.dumps(d))
    assert main(["quantize", str(rd), "--scheme", "int8"]) in (1, 2)
    err = capsys.readouterr().err.strip()
    assert err.startswith("pgolf: error: ") and words in err and "\n" not in err, err
    assert not (rd / "artifact.pgz").exists() and not (rd / "quant.json").exists()
