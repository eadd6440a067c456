"""Artifact container: exact round trip per scheme, bit packing, every corruption rejected."""

import math
import pickle
import struct
import zlib

import numpy as np
import pytest
import torch

from pgolf.errors import ArtifactError
from pgolf.presets import PRESETS, get_preset
from pgolf.quant.format import artifact, container, packing
from pgolf.quant.format.artifact import build_artifact, decode, encode, load_artifact, write_artifact


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
    m = cfg.model
    m.num_layers, m.model_dim, m.num_heads, m.num_kv_heads = 2, 64, 4, 2
    m.bigram_buckets, m.bigram_dim, m.value_embed_dim, m.value_embed_layers, m.xsa_last_n = 64, 16, 16, (1,), 1
    cfg.quant.fp16_max_numel = 500
    return cfg


def _sd():
    """A state dict of the model _cfg() describes: random weights, one bf16 tensor, one zero matrix."""
    from pgolf.model.gpt import GPT

    torch.manual_seed(0)
    sd = GPT(_cfg().model).state_dict()
    g = torch.Generator().manual_seed(0)
    for k, t in sd.items():
        if t.dim() == 2 and "zero" not in k:
            sd[k] = torch.randn(t.shape, generator=g) * 0.05
    sd["blocks.0.mlp.down.weight"] = sd["blocks.0.mlp.down.weight"].to(torch.bfloat16)
    sd["blocks.1.mlp.down.weight"] = torch.zeros_like(sd["blocks.1.mlp.down.weight"])
    sd["blocks.1.attn.q.weight"] = sd["blocks.0.attn.q.weight"]  # tied: stored once, as an alias
    return sd


ROLES = None  # the model's own roles


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
    assert torch.equal(out["blocks.0.attn_scale"], sd["blocks.0.attn_scale"])  # control: fp32, exact
    assert torch.equal(out["smear.gate"], sd["smear.gate"].half().float())  # 1-D: fp16
    assert torch.all(out["blocks.1.mlp.down.weight"] == 0)
    assert out["blocks.1.attn.q.weight"] is out["blocks.0.attn.q.weight"]
    by = {r["name"]: r for r in rows}
    assert "blocks.1.attn.q.weight" not in by  # alias, not stored twice
    assert by["blocks.1.mlp.down.weight"]["rel_mse"] is None
    assert 0 < by["blocks.0.mlp.up.weight"]["rel_mse"] < 1
    want_bits = {"turbo": 2, "turbo-prod": 2, "int6": 6, "int8": 8}[scheme]
    assert by["blocks.0.mlp.up.weight"]["bits"] == want_bits
    if scheme == "turbo":  # 192 rows x 64 indices at 2 bits + 192 fp16 norms
        assert by["blocks.0.mlp.up.weight"]["bytes"] == math.ceil(192 * 64 * 2 / 8) + 192 * 2


def test_zstd_codec_roundtrips():
    pytest.importorskip("zstandard")
    cfg = _cfg()
    cfg.quant.codec = "zstd"
    data, ref, _ = build_artifact(_sd(), cfg, ROLES)
    out, _ = decode(data)
    assert all(torch.equal(out[k], ref[k]) for k in ref)


def test_zstd_codec_is_an_optional_feature(monkeypatch):
    """Only a config with quant.codec = "zstd" carries the zstd codec (pgolf.features); without the
    zstandard package, writing fails with a ConfigError and reading with an ArtifactError."""
    import sys

    from pgolf.errors import ConfigError
    from pgolf.features import modules_for

    assert modules_for({"quant": {"codec": "zstd"}}) == ["pgolf.quant.format.zstd_codec"]
    assert modules_for({"quant": {"codec": "lzma"}}) == []
    monkeypatch.setitem(sys.modules, "zstandard", None)  # import zstandard -> ImportError
    with pytest.raises(ConfigError, match="zstandard"):
        container.compress(b"x", "zstd")
    stream = b"not read"
    pre = container.PRELUDE.pack(container.MAGIC, container.VERSION, container.CODECS["zstd"], 0, len(stream), 8,
                                 zlib.crc32(stream))
    with pytest.raises(ArtifactError, match="zstandard"):
        container.open_stream(pre + struct.pack("<I", zlib.crc32(pre)) + stream)


def test_encode_is_deterministic_and_bits_override_applies():
    cfg = _cfg()
    assert encode(_sd(), cfg, ROLES) == encode(_sd(), cfg, ROLES)
    _, _, rows = build_artifact(_sd(), cfg, ROLES, {"mlp_up": 5})
    assert {r["name"]: r["bits"] for r in rows}["blocks.0.mlp.up.weight"] == 5


def _good():
    return encode(_sd(), _cfg(), ROLES)


def _reprelude(data, **fields):
    magic, version, codec, pad, slen, rlen, scrc = container.PRELUDE.unpack_from(data)
    vals = dict(magic=magic, version=version, codec=codec, pad=pad, slen=slen, rlen=rlen, scrc=scrc)
    vals.update(fields)
    pre = container.PRELUDE.pack(*vals.values())
    return pre + struct.pack("<I", zlib.crc32(pre)) + data[container.PRELUDE_SIZE:]


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
        data[container.PRELUDE_SIZE + 30] ^= 0x40  # inside the compressed JSON header
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
    other = _cfg().model
    other.num_layers = 7
    with pytest.raises(ArtifactError, match="different model config: num_layers=2"):
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
    start = container.PRELUDE_SIZE + 4
    data[start] = ord("[")  # header JSON no longer an object
    stream = bytes(data[container.PRELUDE_SIZE:])
    fixed = _reprelude(bytes(data), scrc=zlib.crc32(stream))
    with pytest.raises(ArtifactError, match="header"):
        decode(fixed)
    # a tensor table pointing outside the body
    raw = bytes(encode(_sd(), cfg, ROLES))[container.PRELUDE_SIZE:]
    hlen = struct.unpack_from("<I", raw)[0]
    import json as _json

    header = _json.loads(raw[4 : 4 + hlen])
    entry = next(e for e in header["tensors"] if e["kind"] == "turbo")
    entry["segments"]["idx"] = [10**9, entry["segments"]["idx"][1]]
    hj = _json.dumps(header).encode()
    stream = struct.pack("<I", len(hj)) + hj + raw[4 + hlen :]
    sealed = _reprelude(bytes(data[: container.PRELUDE_SIZE]) + stream, slen=len(stream), rlen=len(stream),
                        scrc=zlib.crc32(stream))
    with pytest.raises(ArtifactError, match="gap|overlap"):
        decode(sealed)


def test_nan_weight_is_a_clear_error():
    from pgolf.errors import PgolfError

    sd = _sd()
    sd["blocks.0.mlp.up.weight"][0, 0] = float("nan")
    with pytest.raises(PgolfError, match="blocks.0.mlp.up.weight.*NaN"):
        encode(sd, _cfg(), ROLES)


def test_each_distinct_rotation_width_is_built_once(monkeypatch):
    from pgolf.quant.schemes import rotation

    calls = []
    real = rotation._haar
    monkeypatch.setattr(rotation, "_haar", lambda seed, d, stream: calls.append(d) or real(seed, d, stream))
    rotation.rotation_matrix.cache_clear()
    rotation._TENSOR_CACHE.clear()
    data = _good()
    calls.clear()
    rotation.rotation_matrix.cache_clear()
    rotation._TENSOR_CACHE.clear()
    sd, cfg = decode(data)
    decode(data)  # a second load reuses the cache
    header, _ = artifact.read_header(data)
    widths = {math.prod(e["shape"][1:]) for e in header["tensors"] if e["kind"] == "turbo"}
    assert sorted(calls) == sorted(widths) and len(widths) >= 2


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_model_builds_on_the_meta_device(preset):
    """The loader checks a header against GPT(config.model) built on ``meta`` (no memory): every
    preset's model must build there, or its artifacts could not be loaded."""
    from pgolf.quant.format.header import model_tensors

    cfg = get_preset(preset)
    tensors = model_tensors(cfg.model, 10**6)
    assert tensors and all(len(v) == 3 for v in tensors.values())
