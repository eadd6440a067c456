"""record and turbo-rd end to end: exact decode, byte targets, LQER, the quantize CLI."""

import json

import numpy as np
import pytest
import torch

from pgolf.cli import main
from pgolf.quant.format.artifact import build_artifact, decode
from pgolf.quant.calibrate.hessian import Calibration, collect_hessians


def _model():
    from tests.test_quantize_cli import small_model

    return small_model()


@pytest.fixture(scope="module")
def setup():
    cfg, model = _model()
    batches = [torch.randint(0, cfg.model.vocab_size, (4, 32)) for _ in range(2)]
    hs, s = collect_hessians(model, batches)
    return cfg, model.state_dict(), Calibration(hs, 256, s, 2)


@pytest.mark.parametrize("scheme", ["turbo", "turbo-prod", "int6", "int8", "record", "turbo-rd"])
def test_decode_equals_reference_for_every_scheme(setup, scheme):
    cfg, sd, calib = setup
    cfg.quant.scheme = scheme
    data, ref, rows = build_artifact(sd, cfg, calib=calib, target_bytes=60_000)
    out, _ = decode(data)
    assert set(out) == set(sd)
    for k in sd:
        assert out[k].dtype == ref[k].dtype and torch.equal(out[k], ref[k]), k


@pytest.mark.parametrize("target", [45_000, 70_000, 110_000])
def test_turbo_rd_lands_within_half_a_percent_below_target(setup, target):
    cfg, sd, calib = setup
    cfg.quant.scheme = "turbo-rd"
    facts = {}
    data, _, rows = build_artifact(sd, cfg, calib=calib, target_bytes=target, facts=facts)
    assert 0.995 * target <= len(data) <= target, (len(data), facts)
    assert facts["target_bytes"] == target
    steps = [r["calib"]["step"] for r in rows if r["kind"] == "turbo-rd"]
    assert steps and all(s > 0 for s in steps)


def test_turbo_rd_more_bytes_less_error(setup):
    cfg, sd, calib = setup
    cfg.quant.scheme = "turbo-rd"
    err = []
    for target in (45_000, 110_000):
        _, ref, _ = build_artifact(sd, cfg, calib=calib, target_bytes=target)
        err.append(sum(float(((sd[k].float() - ref[k].float()) ** 2).sum()) for k in sd if sd[k].dim() == 2))
    assert err[1] < 0.5 * err[0]


def test_record_lqer_lowers_error_of_its_tensors(setup):
    cfg, sd, calib = setup
    cfg.quant.scheme = "record"
    facts = {}
    cfg.quant.lqer_rank = 0
    _, _, plain = build_artifact(sd, cfg, calib=calib)
    cfg.quant.lqer_rank, cfg.quant.lqer_top_k = 4, 3
    _, _, fixed = build_artifact(sd, cfg, calib=calib, facts=facts)
    assert len(facts["lqer"]) == 3
    before = {r["name"]: r["rel_mse"] for r in plain}
    after = {r["name"]: r["rel_mse"] for r in fixed}
    for name in facts["lqer"]:
        assert after[name] < before[name]
    untouched = [n for n in before if n not in facts["lqer"]]
    assert all(after[n] == before[n] for n in untouched)


def test_record_uses_record_widths(setup):
    cfg, sd, calib = setup
    cfg.quant.scheme = "record"
    _, _, rows = build_artifact(sd, cfg, calib=calib)
    by = {r["name"]: r for r in rows}
    assert by["tok_emb.weight"]["bits"] == 7 and by["blocks.0.mlp.up.weight"]["bits"] == 6
    assert by["blocks.0.mlp.up.weight"]["calib"]["k"] == 11.5 and by["blocks.0.attn.q.weight"]["calib"]["k"] == 13.0
    assert by["blocks.0.attn_scale"]["kind"] == "fp16"


# ----------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from pgolf.data.shards import shard_name, write_shard

    root = tmp_path_factory.mktemp("schemes")
    cfg, model = _model()
    data = root / "data"
    data.mkdir()
    write_shard(data / shard_name("train", 0), np.random.default_rng(0).integers(0, 1024, 40_000).astype(np.uint16))
    cfg.train.batch_tokens, cfg.train.seq_len = 2048, 256
    run = root / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({**cfg.to_dict(), "data_dir": str(data), "tokenizer": "tok.model"}))
    torch.save(model.state_dict(), run / "model.pt")
    return run


def test_cli_record_out_dir_with_calibration(run_dir, tmp_path, capsys):
    out = tmp_path / "rec"
    assert main(["quantize", str(run_dir), "--scheme", "record", "--calib-batches", "3", "--out", str(out)]) == 0
    q = json.loads((out / "quant.json").read_text())
    assert (out / "artifact.pgz").stat().st_size == q["artifact_bytes"]
    assert not (run_dir / "artifact.pgz").exists() and not (run_dir / "quant.json").exists()
    assert q["scheme"] == "record" and q["calibration_s"] > 0 and q["calibration_tokens"] == 3 * 2048
    by = {t["name"]: t for t in q["tensors"]}
    assert by["blocks.0.mlp.down.weight"]["calib"]["hessian"] == "6144 tokens"
    assert by["value_embed.table.weight"]["calib"]["hessian"] == "none"
    assert "calibration: 3 train batches" in capsys.readouterr().out


def test_cli_turbo_rd_target_bytes(run_dir, tmp_path):
    out = tmp_path / "rd"
    assert main(["quantize", str(run_dir), "--scheme", "turbo-rd", "--target-bytes", "80000", "--out", str(out)]) == 0
    q = json.loads((out / "quant.json").read_text())
    assert 0.995 * 80_000 <= q["artifact_bytes"] <= 80_000 and q["target_bytes"] == 80_000
    assert main(["quantize", "--inspect", str(out / "artifact.pgz")]) == 0


def test_cli_turbo_rd_default_target_above_the_finest_grid(run_dir, tmp_path, capsys):
    """README's ``pgolf quantize RUN --scheme turbo-rd`` (no --target-bytes) on a model far
    smaller than the budget: the finest grid is used, said in one line, and it decodes
    (it crashed: "entropy coder: N distinct code values exceed 65536" / struct.error)."""
    from pgolf.quant.format.entropy import MAX_SYMBOLS

    out = tmp_path / "rd"
    assert main(["quantize", str(run_dir), "--scheme", "turbo-rd", "--calib-batches", "0", "--out", str(out)]) == 0
    q = json.loads((out / "quant.json").read_text())
    assert q["target_bytes"] == 16_000_000 - q["code_bytes"] and q["artifact_bytes"] < q["target_bytes"]
    assert "finest grid" in capsys.readouterr().out
    assert main(["quantize", "--inspect", str(out / "artifact.pgz")]) == 0
    from pgolf.quant.format.container import open_stream, parse_header_json

    header = parse_header_json(open_stream((out / "artifact.pgz").read_bytes()).read_header())
    rd = [t for t in header["tensors"] if t["kind"] == "turbo-rd"]
    assert rd and all(t["step"] >= 4.0 / MAX_SYMBOLS for t in rd)


@pytest.mark.parametrize("codes", [np.arange(70_000), np.array([2 ** 40, 2 ** 40 + 1])])
def test_entropy_coder_refuses_what_it_cannot_take_with_a_pgolf_error(codes):
    from pgolf.errors import PgolfError
    from pgolf.quant.format.entropy import encode_codes

    with pytest.raises(PgolfError, match="entropy coder"):
        encode_codes(codes)


def test_cli_bad_options_one_line(run_dir, tmp_path, capsys):
    assert main(["quantize", str(run_dir), "--scheme", "turbo-rd", "--bits", "attn=3", "--out", str(tmp_path / "a")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--target-bytes" in err
    assert main(["quantize", str(run_dir), "--scheme", "record", "--data", str(tmp_path / "nope"),
                 "--out", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "calibration" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize("scheme", ["record", "turbo-rd"])
def test_qat_trains_against_the_scheme_grid(scheme):
    from pgolf.quant.schemes import record, turbo_rd
    from pgolf.quant.calibrate.gptq import IntGrid, gptq
    from pgolf.quant.schemes.qat import prepare_qat, qat_state, update_qat

    cfg, model = _model()
    cfg.quant.scheme = scheme
    prepare_qat(model, cfg.quant)
    assert not model._qat_unhooked
    update_qat(model, 0.1, cfg.quant)
    assert qat_state(model)["blocks.0.mlp.up"] == (6 if scheme == "record" else 2)
    lin = model.blocks[0].mlp.up
    w = lin.weight.detach().float()
    got = lin.effective_weight().detach()
    if scheme == "record":
        s = record.row_scales(w, 6, record.K_ROLE["mlp_up"])
        want = record.dequantize(gptq(w, None, s, IntGrid(31)), s)
    else:
        rot = turbo_rd.rotation_of(cfg.quant, w.shape[1])
        step = turbo_rd.qat_step(2, w.shape[1])
        norms = torch.linalg.vector_norm(w, dim=1).to(torch.float16)
        codes = torch.round((w / torch.linalg.vector_norm(w, dim=1, keepdim=True)) @ rot.T / step)
        want = turbo_rd.dequantize(norms, codes, step, rot)
    assert torch.allclose(got, want, atol=1e-6) and not torch.allclose(got, w, atol=1e-4)


def test_turbo_rd_qat_step_gives_its_bits_of_entropy():
    from pgolf.quant.format.entropy import empirical_entropy_bits
    from pgolf.quant.schemes.turbo_rd import qat_step

    d = 512
    x = np.random.default_rng(0).normal(0, d**-0.5, 200_000)
    for bits in (3, 4):
        h = empirical_entropy_bits(np.round(x / qat_step(bits, d)).astype(np.int64)) / x.size
        assert abs(h - bits) < 0.05


def test_record_k_search_changes_k_only_off_the_record_width(setup):
    cfg, sd, calib = setup
    cfg.quant.scheme, cfg.quant.record_k_search = "record", True
    try:
        _, _, rows = build_artifact(sd, cfg, calib=calib, bits_overrides={"mlp_up": 4})
    finally:
        cfg.quant.record_k_search = False
    by = {r["name"]: r["calib"]["k"] for r in rows if r["kind"] == "record"}
    assert by["blocks.0.mlp.up.weight"] < 11.5 and by["blocks.0.attn.q.weight"] == 13.0


@pytest.mark.slow
def test_seed_preset_turbo_rd_fills_the_budget(tmp_path):
    """pgolf quantize --scheme turbo-rd, no --target-bytes: artifact + code within 0.5% under 16,000,000."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    run = tmp_path / "seed"
    subprocess.run([sys.executable, str(repo / "benchmarks" / "rate_distortion.py"), "--seed-run", str(run)], check=True)
    assert main(["quantize", str(run), "--scheme", "turbo-rd", "--calib-batches", "0"]) == 0
    q = json.loads((run / "quant.json").read_text())
    assert 0.995 * 16_000_000 <= q["total_bytes"] <= 16_000_000


@pytest.mark.parametrize("mutate", ["segment_outside_group", "wrong_shape", "foreign_kind", "missing_tensor", "bad_group"])
def test_grouped_header_rejected_before_the_body(setup, mutate):
    from pgolf.errors import ArtifactError
    from pgolf.quant.format.artifact import _assemble
    from pgolf.quant.format.container import open_stream, parse_header_json

    cfg, sd, calib = setup
    cfg.quant.scheme = "record"
    data, _, _ = build_artifact(sd, cfg, calib=calib)
    reader = open_stream(data)
    header = parse_header_json(reader.read_header())
    body_len = sum(g["len"] for g in header["groups"])
    body = reader.read_body(body_len)
    rec = next(e for e in header["tensors"] if e["kind"] == "record")
    if mutate == "segment_outside_group":
        rec["segments"]["codes"][1] = 10**9
    elif mutate == "wrong_shape":
        rec["shape"] = [rec["shape"][0] + 1] + rec["shape"][1:]
    elif mutate == "foreign_kind":
        rec["kind"] = "turbo-rd"
    elif mutate == "missing_tensor":
        header["tensors"].remove(rec)
    else:
        header["groups"][0]["raw_len"] = -1
    q = cfg.quant.__class__(**{**cfg.quant.__dict__, "codec": "none"})
    with pytest.raises(ArtifactError) as err:
        decode(_assemble(header, body, q))
    assert len(str(err.value).splitlines()) == 1
