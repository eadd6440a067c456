"""Artifact container: exact round trip per scheme, bit packing, every corruption rejected."""

import math
import pickle
import struct
import zlib

import numpy as np
import pytest
import torch

from pgolf.config import get_preset
from pgolf.errors import ArtifactError
from pgolf.quant import artifact, packing
from pgolf.quant.artifact import build_artifact, decode, encode, load_artifact, write_artifact


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("n", [7, 1001])
def test_packed_size_is_ceil_n_b_over_8_and_roundtrips(bits, n):
    rng = np.random.default_rng(bits * 1000 + n)
    v = rng.integers(0, 2**bits, n).astype(np.uint8)
    buf = packing.pack_bits(v, bits)
    assert len(buf) == math.ceil(n * bits / 8)
    assert np.array_equal(packing.unpack_bits(buf, n, bits), v)


def test_pack_rejects_values_too_wide():
    with pytest.raises(ValueError):
        packing.pack_bits(np.array([4], np.uint8), 2)


def _cfg():
    cfg = get_preset("tiny")
    cfg.quant.fp16_max_numel = 500
    return cfg


def _sd():
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(64, 32, generator=g) * 0.05
    return {
        "tok_emb.weight": emb,
        "blocks.0.attn.q.weight": torch.randn(32, 32, generator=g),
        "blocks.0.mlp.up.weight": torch.randn(96, 32, generator=g),
        "blocks.0.mlp.down.weight": torch.randn(32, 96, generator=g).to(torch.bfloat16),
        "blocks.0.proj.weight": torch.randn(40, 16, generator=g),
        "blocks.0.small.weight": torch.randn(8, 8, generator=g),
        "blocks.0.zero.weight": torch.zeros(32, 32),
        "blocks.0.scale": torch.rand(32, generator=g),
        "lm_head.weight": emb,  # tied: stored once
        "buf.step": torch.arange(5),
    }


ROLES = {"tok_emb.weight": "embed", "blocks.0.attn.q.weight": "attn", "blocks.0.mlp.up.weight": "mlp_up",
         "blocks.0.mlp.down.weight": "mlp_down", "blocks.0.proj.weight": "proj", "blocks.0.small.weight": "attn",
         "blocks.0.zero.weight": "mlp_up", "blocks.0.scale": "control", "lm_head.weight": "embed"}


@pytest.mark.parametrize("scheme,codec", [("turbo", "lzma"), ("turbo", "none"), ("turbo-prod", "lzma"),
                                          ("int6", "none"), ("int8", "lzma")])
def test_decode_encode_equals_dequantized_reference_exactly(scheme, codec):
    cfg = _cfg()
    cfg.quant.scheme, cfg.quant.codec = scheme, codec
    sd = _sd()
    data, ref, rows = build_artifact(sd, cfg, ROLES)
    out, cfg2 = decode(data, expected_model=cfg.model)
    assert list(out) == list(sd)
    for k in sd:
        assert out[k].dtype == sd[k].dtype and out[k].shape == sd[k].shape, k
        assert torch.equal(out[k], ref[k]), k
    assert cfg2.quant.scheme == scheme and cfg2.model == cfg.model
    assert torch.equal(out["buf.step"], sd["buf.step"]) and torch.equal(out["blocks.0.scale"], sd["blocks.0.scale"])
    assert torch.equal(out["blocks.0.small.weight"], sd["blocks.0.small.weight"].half().float())
    assert torch.all(out["blocks.0.zero.weight"] == 0)
    by = {r["name"]: r for r in rows}
    assert "lm_head.weight" not in by  # alias, not stored twice
    assert by["blocks.0.zero.weight"]["rel_mse"] is None
    assert 0 < by["blocks.0.mlp.up.weight"]["rel_mse"] < 1
    want_bits = {"turbo": 2, "turbo-prod": 2, "int6": 6, "int8": 8}[scheme]
    assert by["blocks.0.mlp.up.weight"]["bits"] == want_bits
    if scheme == "turbo":  # 96 rows x 32 indices at 2 bits + 96 fp16 norms
        assert by["blocks.0.mlp.up.weight"]["bytes"] == math.ceil(96 * 32 * 2 / 8) + 96 * 2


def test_zstd_codec_roundtrips():
    pytest.importorskip("zstandard")
    cfg = _cfg()
    cfg.quant.codec = "zstd"
    data, ref, _ = build_artifact(_sd(), cfg, ROLES)
    out, _ = decode(data)
    assert all(torch.equal(out[k], ref[k]) for k in ref)


def test_encode_is_deterministic_and_bits_override_applies():
    cfg = _cfg()
    assert encode(_sd(), cfg, ROLES) == encode(_sd(), cfg, ROLES)
    _, _, rows = build_artifact(_sd(), cfg, ROLES, {"mlp_up": 5})
    assert {r["name"]: r["bits"] for r in rows}["blocks.0.mlp.up.weight"] == 5


def _good():
    return encode(_sd(), _cfg(), ROLES)


def _reprelude(data, **fields):
    magic, version, codec, pad, slen, rlen, scrc = artifact._PRELUDE.unpack_from(data)
    vals = dict(magic=magic, version=version, codec=codec, pad=pad, slen=slen, rlen=rlen, scrc=scrc)
    vals.update(fields)
    pre = artifact._PRELUDE.pack(*vals.values())
    return pre + struct.pack("<I", zlib.crc32(pre)) + data[artifact.PRELUDE_SIZE:]


@pytest.mark.parametrize("case,needle", [
    ("truncated", "truncated"),
    ("short", "truncated"),
    ("flip_prelude", "checksum"),
    ("flip_header", "checksum"),
    ("flip_body", "checksum"),
    ("magic", "bad magic"),
    ("version", "unsupported artifact version 99"),
])
def test_corrupt_artifacts_are_rejected_with_one_line(case, needle):
    data = bytearray(_good())
    if case == "truncated":
        data = data[:-10]
    elif case == "short":
        data = data[:20]
    elif case == "flip_prelude":
        data[12] ^= 0x01  # a length byte
    elif case == "flip_header":
        data[artifact.PRELUDE_SIZE + 30] ^= 0x40  # inside the compressed JSON header
    elif case == "flip_body":
        data[-50] ^= 0x01
    elif case == "magic":
        data[:6] = b"PK\x03\x04zz"
    elif case == "version":
        data = bytearray(_reprelude(bytes(data), version=99))
    with pytest.raises(ArtifactError, match=needle) as e:
        decode(bytes(data))
    assert "\n" not in str(e.value)


def test_different_model_config_is_rejected():
    cfg = _cfg()
    data = encode(_sd(), cfg, ROLES)
    other = get_preset("tiny").model
    other.num_layers = 7
    with pytest.raises(ArtifactError, match="different model config: num_layers=4"):
        decode(data, expected_model=other)
    decode(data, expected_model=cfg.model)  # same config passes


def test_never_unpickles(monkeypatch, tmp_path):
    def boom(*a, **k):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(torch, "load", boom)
    p = tmp_path / "a.pgz"
    write_artifact(p, _good())
    sd, _ = load_artifact(p)
    assert "tok_emb.weight" in sd
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left no temp file


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(ArtifactError, match="nope.pgz"):
        load_artifact(tmp_path / "nope.pgz")


def test_valid_checksums_around_a_malformed_header_still_fail_cleanly():
    # codec none keeps the JSON header in clear; corrupt it and re-seal the checksums
    cfg = _cfg()
    cfg.quant.codec = "none"
    data = bytearray(encode(_sd(), cfg, ROLES))
    start = artifact.PRELUDE_SIZE + 4
    data[start] = ord("[")  # header JSON no longer an object
    stream = bytes(data[artifact.PRELUDE_SIZE:])
    fixed = _reprelude(bytes(data), scrc=zlib.crc32(stream))
    with pytest.raises(ArtifactError, match="header"):
        decode(fixed)
    # a tensor table pointing outside the body
    raw = bytes(encode(_sd(), cfg, ROLES))[artifact.PRELUDE_SIZE:]
    hlen = struct.unpack_from("<I", raw)[0]
    import json as _json

    header = _json.loads(raw[4 : 4 + hlen])
    header["tensors"][1]["segments"]["idx"] = [10**9, 5]
    hj = _json.dumps(header).encode()
    stream = struct.pack("<I", len(hj)) + hj + raw[4 + hlen :]
    sealed = _reprelude(bytes(data[: artifact.PRELUDE_SIZE]) + stream, slen=len(stream), rlen=len(stream),
                        scrc=zlib.crc32(stream))
    with pytest.raises(ArtifactError, match="outside"):
        decode(sealed)


def test_nan_weight_is_a_clear_error():
    from pgolf.errors import PgolfError

    sd = _sd()
    sd["blocks.0.mlp.up.weight"][0, 0] = float("nan")
    with pytest.raises(PgolfError, match="blocks.0.mlp.up.weight.*NaN"):
        encode(sd, _cfg(), ROLES)
