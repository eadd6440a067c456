"""Range coding of integer codes and per-group compression."""

import numpy as np
import pytest

from pgolf.errors import ArtifactError
from pgolf.quant.format.entropy import decode_codes, empirical_entropy_bits, encode_codes
from pgolf.quant.calibrate.groups import GroupReader, GroupWriter


@pytest.mark.parametrize("sigma", [0.4, 1.5, 6.0])
def test_range_coder_roundtrip_and_size_near_entropy(sigma):
    rng = np.random.default_rng(0)
    codes = np.round(rng.laplace(0, sigma, 300_000)).astype(np.int64)
    blob = encode_codes(codes)
    assert np.array_equal(decode_codes(blob), codes)
    assert 8 * len(blob) <= 1.01 * empirical_entropy_bits(codes)


def test_range_coder_edge_cases():
    for codes in (np.zeros(0, np.int64), np.full(1000, -3), np.array([5, -7, 5])):
        assert np.array_equal(decode_codes(encode_codes(codes)), codes)


def test_range_coder_rejects_bad_blobs():
    blob = encode_codes(np.arange(100) % 7)
    with pytest.raises(ArtifactError):
        decode_codes(blob[:10])
    bad = bytearray(blob)
    bad[0] ^= 1  # symbol count no longer matches the table
    with pytest.raises(ArtifactError):
        decode_codes(bytes(bad))


def test_groups_roundtrip_pick_smaller_codec_and_check_bounds():
    w = GroupWriter()
    a = w.add("codes", bytes(range(256)) * 40)
    b = w.add("ec", b"\x01\x02\x03")
    c = w.add("codes", b"tail")
    table, blob = w.finish(raw_groups=("ec",))
    by = {g["name"]: g for g in table}
    assert by["ec"]["codec"] == "raw" and by["codes"]["codec"] in ("brotli", "lzma")
    assert by["codes"]["len"] < 1000
    r = GroupReader(table, blob)
    assert r.segment(a) == bytes(range(256)) * 40 and r.segment(b) == b"\x01\x02\x03" and r.segment(c) == b"tail"
    with pytest.raises(ArtifactError):
        r.segment(["codes", 20_000, 5])
    with pytest.raises(ArtifactError):
        GroupReader(table, blob[:-2]).segment(b)


def test_decoders_stop_before_allocating_more_than_declared():
    blob = encode_codes(np.arange(1000) % 5)
    with pytest.raises(ArtifactError, match="expected 999"):
        decode_codes(blob, expected_n=999)
    w = GroupWriter()
    ref = w.add("z", bytes(1 << 20))  # compresses to a few hundred bytes
    table, body = w.finish()
    table[0]["raw_len"] = 100  # a lying table: the decompressor must stop near 100 bytes
    with pytest.raises(ArtifactError, match="table entry says 100"):
        GroupReader(table, body).segment(["z", 0, 10])
    assert ref == ["z", 0, 1 << 20]
