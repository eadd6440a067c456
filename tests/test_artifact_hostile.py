"""Hostile artifacts: one test per finding of the fuzzing pass (issue 13), plus the fuzz run.

Each hostile artifact is built at byte level (resealed with valid checksums) by the
helpers of :mod:`pgolf.audit.fuzz`. Cases that could allocate or spin run in a forked
child under a 1 GiB address-space limit and a 10 s alarm; the rest run in-process and
must raise exactly :class:`ArtifactError` with one line.
"""

import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from pgolf.errors import ArtifactError
from pgolf.audit import fuzz
from pgolf.quant.format import packing
from pgolf.quant.format.artifact import decode

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork and RLIMIT_AS")


@pytest.fixture(scope="module")
def bases():
    return fuzz.base_artifacts()


def _big_d(d):
    """A turbo entry of shape [1, d] with segments of the right size for d (old: d x d QR first)."""
    def edit(header, body):
        t = _turbo_entry(header)
        body, norms = fuzz._append_segment(body, bytes(2))
        body, idx = fuzz._append_segment(body, bytes(packing.packed_size(d, t["bits"])))
        t.update(shape=[1, d], segments={"norms": norms, "idx": idx})
        header["codebooks"][t["codebook"]]["d"] = d
        return fuzz.dumps_with(header, {}), body

    return edit


@pytest.fixture(scope="module")
def isolated(bases, tmp_path_factory):
    """Outcome and peak RSS of each case that could allocate or spin, decoded in forked children
    (under 1 GiB of address space and a 10 s alarm) of one fresh interpreter."""
    mut = fuzz.Mutator(bases, seed=0)
    cases = {
        "big-d-16384": fuzz.with_header(bases[0], _big_d(16384)),
        "big-d-65536": fuzz.with_header(bases[0], _big_d(65536)),
        "many-d": mut.header_targeted(bases[0], "many-d")[1],
        "shared-segment": mut.header_targeted(bases[0], "shared-segment")[1],
        "valid-lzma": bases[0],
        "bomb-lzma": fuzz.bomb(bases[0], fuzz._CODEC_LZMA, zeros=256 << 20),
    }
    if fuzz._has_zstd():
        assert fuzz.unseal(bases[1])[0] == fuzz._CODEC_ZSTD
        cases.update({"valid-zstd": bases[1], "bomb-zstd": fuzz.bomb(bases[1], fuzz._CODEC_ZSTD, zeros=256 << 20)})
    folder = tmp_path_factory.mktemp("hostile")
    paths = []
    for name, data in cases.items():
        paths.append(folder / f"{name}.pgz")
        paths[-1].write_bytes(data)
    return dict(zip(cases, fuzz.decode_files_isolated(paths)))


def _rejected(isolated, name: str) -> None:
    outcome, _ = isolated[name]
    assert outcome == "rejected", outcome


def _raises_one_line(data: bytes, needle: str | None = None) -> None:
    with pytest.raises(ArtifactError, match=needle) as e:
        decode(data)
    assert "\n" not in str(e.value)


def _turbo_entry(header):
    return next(t for t in header["tensors"] if t["kind"] == "turbo")


# ---------------------------------------------------------------- the rotation size


@pytest.mark.parametrize("d", [16384, 65536])
def test_header_declared_rotation_dimension_is_bounded_by_the_model(isolated, d):
    _rejected(isolated, f"big-d-{d}")


def test_forty_distinct_rotation_dimensions_are_rejected_before_any_rotation(isolated):
    _rejected(isolated, "many-d")


# ---------------------------------------------------------------- decompression bombs


@pytest.mark.parametrize("codec", ["lzma", "zstd"])
def test_decompression_is_capped_at_the_declared_length(isolated, codec):
    """256 MiB of zeros behind a payload that declares its true (small) length: rejected, and
    the child's peak memory stays within 64 MiB of decoding the valid artifact (old: +256 MiB)."""
    if f"bomb-{codec}" not in isolated:
        pytest.skip("zstandard not installed")
    outcome, valid_rss = isolated[f"valid-{codec}"]
    assert outcome == "accepted"
    outcome, rss = isolated[f"bomb-{codec}"]
    assert outcome == "rejected", outcome
    assert rss - valid_rss < 64 << 10, f"peak RSS {rss >> 10} MiB vs {valid_rss >> 10} MiB for the valid artifact"


# ---------------------------------------------------------------- segment reuse


def test_entries_sharing_one_segment_are_rejected(isolated):
    """200 extra entries decoding the same 8 MB zero segment (old: each one decoded and kept)."""
    _rejected(isolated, "shared-segment")


def test_two_entries_on_one_segment_overlap(bases):
    def edit(header, body):
        ts = [t for t in header["tensors"] if t["kind"] == "turbo"]
        ts[1]["segments"]["idx"] = list(ts[0]["segments"]["idx"])
        return fuzz.dumps_with(header, {}), body

    _raises_one_line(fuzz.with_header(bases[0], edit), "overlap|gap|expected")


# ---------------------------------------------------------------- stray exception types


def _raw_edit(base, path, raw_json):
    def edit(header, body):
        node = header
        for p in path[:-1]:
            node = node[p] if not callable(p) else p(node)
        node[path[-1]] = "\x00X"
        return fuzz.dumps_with(header, {"\x00X": raw_json}), body

    return fuzz.with_header(base, edit)


def _T(tensors):
    return next(t for t in tensors if t["kind"] == "turbo")


def _F(tensors):  # a 2-D tensor stored as plain floats
    return next(t for t in tensors if t["kind"] in ("fp16", "fp32") and len(t["shape"]) == 2)


def _negative_shape(base):
    def edit(header, body):
        t = _F(header["tensors"])
        t["shape"] = [-v for v in t["shape"]]  # same element count, negative dimensions
        return fuzz.dumps_with(header, {}), body

    return fuzz.with_header(base, edit)


STRAY = {
    "struct.error (payload shorter than its header length)": lambda b: fuzz.reseal(b"\x01\x02", fuzz.unseal(b)[0]),
    "RecursionError (deep JSON)": lambda b: _raw_edit(b, ["config", "train", "lr"], "[" * 100000 + "]" * 100000),
    "ValueError (4,300-digit int)": lambda b: _raw_edit(b, ["tensors", _T, "bits"], "1" + "0" * 4300),
    "OverflowError (Infinity in bits)": lambda b: _raw_edit(b, ["tensors", _T, "bits"], "Infinity"),
    "OverflowError (Infinity in shape)": lambda b: _raw_edit(b, ["tensors", _T, "shape", 0], "Infinity"),
    "OverflowError (Infinity in a segment)": lambda b: _raw_edit(b, ["tensors", _T, "segments", "idx", 0], "Infinity"),
    "OverflowError (Infinity as codebook)": lambda b: _raw_edit(b, ["tensors", _T, "codebook"], "Infinity"),
    "OverflowError (Infinity as seed)": lambda b: _raw_edit(b, ["config", "quant", "rotation_seed"], "Infinity"),
    "AttributeError (config section not an object)": lambda b: _raw_edit(b, ["config", "model"], "[1, 2]"),
    "RuntimeError (negative shape)": _negative_shape,
}


@pytest.mark.parametrize("case", sorted(STRAY))
def test_malformed_headers_raise_only_artifact_error(bases, case):
    _raises_one_line(STRAY[case](bases[0]))


# ---------------------------------------------------------------- non-finite and inconsistent values


def _poison(base, what):
    codec, raw = fuzz.unseal(base)
    header, body = fuzz.split_raw(raw)
    body = bytearray(body)
    t = _turbo_entry(header)
    cb = header["codebooks"][t["codebook"]]
    if what in ("nan-codebook", "unsorted-codebook"):
        off, n = cb["segment"]
        levels = list(struct.unpack(f"<{n // 4}f", bytes(body[off : off + n])))
        levels = [float("nan")] + levels[1:] if what == "nan-codebook" else levels[::-1]
        body[off : off + n] = struct.pack(f"<{n // 4}f", *levels)
    elif what == "inf-norm":
        off = t["segments"]["norms"][0]
        body[off : off + 2] = np.array([np.inf], np.float16).tobytes()
    elif what == "bits-disagree":  # one bit more than its codebook, indices all 0: decodable, but wrong
        t["bits"] = cb["bits"] + 1
        t["segments"]["idx"] = [len(body), packing.packed_size(int(np.prod(t["shape"])), t["bits"])]
        body += bytes(t["segments"]["idx"][1])
    text = fuzz.dumps_with(header, {})
    return fuzz.reseal(fuzz.join_raw(text, bytes(body)), codec)


@pytest.mark.parametrize("what", ["nan-codebook", "inf-norm", "unsorted-codebook", "bits-disagree"])
def test_nonfinite_or_inconsistent_values_are_rejected(bases, what):
    _raises_one_line(_poison(bases[0], what))


# ---------------------------------------------------------------- bit packing


def test_pack_bits_checks_the_range_before_casting_and_unpack_checks_bits():
    with pytest.raises(ValueError):
        packing.pack_bits(np.array([256]), 2)  # used to wrap to 0
    with pytest.raises(ValueError):
        packing.pack_bits(np.array([-1]), 8)
    with pytest.raises(ValueError):
        packing.unpack_bits(bytes(2), 1, 9)


# ---------------------------------------------------------------- the fuzz run


def test_fuzz_500_cases_only_artifact_errors_under_1gib_and_10s():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "pgolf.audit.fuzz", "--cases", "500", "--seed", "0", "--json"],
                          capture_output=True, text=True, env=env, timeout=600)
    summary = json.loads(proc.stdout)
    assert summary["cases"] == 500 and summary["limit_mib"] == 1024
    assert summary["failures"] == [], summary["failures"][:5]
    ops = summary["by_op"]
    assert {"bomb", "header-big-d", "header-shared-segment", "header-value", "flip", "truncate"} <= set(ops)
    assert proc.returncode == 0


# ---------------------------------------------------------------- issue 21: grouped schemes, configs, paths

from pgolf.audit import fuzz_classes  # noqa: E402


@pytest.fixture(scope="module")
def grouped():
    return {s: fuzz.base_artifact(s) for s in ("record", "turbo-rd")}


@pytest.fixture(scope="module")
def grouped_bombs(grouped, tmp_path_factory):
    """Outcome and peak RSS of 64 MiB group bombs (declared, hidden, in every group) and the
    valid artifacts, each decoded in a forked child under 1 GiB of address space."""
    cases = {f"valid-{s}": data for s, data in grouped.items()}
    for s, data in grouped.items():
        for codec, how in (("brotli", "declared"), ("brotli", "hidden"), ("lzma", "every")):
            cases[f"{s}:{codec}-{how}"] = fuzz_classes.group_bomb(data, codec, 64 << 20, how)
    folder = tmp_path_factory.mktemp("groups")
    paths = [folder / f"{i}.pgz" for i in range(len(cases))]
    for p, data in zip(paths, cases.values()):
        p.write_bytes(data)
    return dict(zip(cases, fuzz.decode_files_isolated(paths)))


def test_group_bombs_are_rejected_before_they_inflate(grouped_bombs):
    """A group that declares (or hides) 64 MiB behind a few hundred compressed bytes: rejected
    (old: accepted, the declared size was trusted), and the child's peak RSS stays within
    32 MiB of decoding the valid artifact."""
    bombs = {k: v for k, v in grouped_bombs.items() if not k.startswith("valid")}
    assert len(bombs) == 6
    for name, (outcome, rss) in bombs.items():
        valid_outcome, valid_rss = grouped_bombs[f"valid-{name.split(':')[0]}"]
        assert valid_outcome == "accepted"
        assert outcome == "rejected", (name, outcome)
        assert rss - valid_rss < 32 << 10, (name, rss >> 10, valid_rss >> 10)


def _case(cases, prefix):
    return next(data for name, data in cases if name.startswith(prefix))


@pytest.mark.parametrize("scheme, prefix, needle", [
    ("record", "nonfinite-scales-nan", "scales hold NaN"),
    ("record", "nonfinite-lqer_a_step-inf", "LQER factor a steps"),
    ("record", "nonfinite-data-nan", "stored values hold NaN"),
    ("turbo-rd", "nonfinite-norms-inf", "norms hold NaN"),
    ("turbo-rd", "header-step-3e38", "step 3e\\+38 is outside"),
    ("turbo-rd", "header-step-nan", "step"),
])
def test_grouped_nonfinite_values_are_rejected_naming_the_tensor(grouped, scheme, prefix, needle):
    data = _case(fuzz_classes.nonfinite_cases(grouped[scheme]), prefix)
    with pytest.raises(ArtifactError, match=needle) as e:
        decode(data)
    assert str(e.value).startswith("tensor ") and "\n" not in str(e.value)


def test_decoded_values_that_overflow_their_dtype_are_rejected(bases):
    """int6 codes times fp16 scales of 65504, stored as float16: inf after the cast (old: accepted)."""
    codec, raw = fuzz.unseal(bases[2])
    header, body = fuzz.split_raw(raw)
    body = bytearray(body)
    e = next(t for t in header["tensors"] if t["kind"] == "int")
    e["dtype"] = "float16"
    off, n = e["segments"]["scales"]
    body[off : off + n] = np.full(n // 2, 65504, np.float16).tobytes()
    _raises_one_line(fuzz.reseal(fuzz.join_raw(fuzz.dumps_with(header, {}), bytes(body)), codec), "decoded values")


def test_grouped_header_with_unhashable_dtype_is_an_artifact_error(grouped):
    def edit(header, body):
        next(t for t in header["tensors"] if t.get("kind") == "record")["dtype"] = ["float32"]
        return fuzz.dumps_with(header, {}), body

    _raises_one_line(fuzz.with_header(grouped["record"], edit))


@pytest.mark.parametrize("path, raw", [
    (("train", "matrix_lr"), '"nan"'),
    (("eval", "batch_seqs"), "10000000"),
    (("model", "num_loops"), "100000000"),
    (("model", "logit_softcap"), "1e308"),
    (("ttt", "lora_rank"), "1000000"),
    (("eval", "two_pass_buckets"), "68719476736"),
    (("preset",), '"../../x"'),
    (("data_dir",), '"/etc"'),
    (("tokenizer",), '"/etc/passwd"'),
    (("model", "mlp_activation"), json.dumps("\x80\x04\x95cos\nsystem\n")),
])
def test_embedded_config_is_validated_like_set(bases, path, raw):
    """The artifact's own config passes the --set schema and ranges and names no files."""
    _raises_one_line(fuzz_classes._config_edit(bases[0], path, raw), "artifact config")


@pytest.mark.slow
@pytest.mark.parametrize("scheme", sorted(fuzz.SCHEMES))
def test_fuzz_every_scheme_with_every_systematic_class(scheme):
    """Random cases plus every bomb, non-finite, config and path case of one scheme: 0 failures
    (a failure: anything but a one-line ArtifactError or an accepted artifact with finite
    weights and an acceptable config; a bomb accepted or inflating the child), each case
    under 1 GiB of address space and 5 s."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "pgolf.audit.fuzz", "--scheme", scheme, "--cases", "100", "--json"],
                          capture_output=True, text=True, env=env, timeout=1200)
    summary = json.loads(proc.stdout)
    assert set(summary["by_class"]) == {"random", "bombs", "nonfinite", "config", "paths"}
    assert summary["failures"] == [], summary["failures"][:5]
    assert proc.returncode == 0
