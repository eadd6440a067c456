"""Exact entropy coding of integer codes with a range coder (the ``constriction`` package).

A tensor's integer codes are shifted to ``0..K-1`` and coded with one static
categorical model whose symbol counts travel with the data, so the cost is close to
the empirical entropy ``n * H(counts)`` plus the count table. Blob layout (little-endian)::

    n u64 | offset i32 | K u32 | counts u32[K] | range-coder words u32[...]

Encoder and decoder build the model from the same integer counts with the same float64
arithmetic, so decoding is exact. ``constriction`` (Bamler, MIT/Apache) is a maintained
Rust range/ANS coder with numpy bindings; it is needed to *decode* too. Example::

    blob = encode_codes(codes)              # codes: any integer numpy array
    assert (decode_codes(blob) == codes.ravel()).all()
"""

from __future__ import annotations

import struct

import numpy as np

from pgolf.errors import ArtifactError, PgolfError

_HEAD = struct.Struct("<QiI")
MAX_SYMBOLS = 1 << 16


def empirical_entropy_bits(codes) -> float:
    """``n * H`` in bits of the empirical symbol distribution of ``codes``."""
    c = np.asarray(codes).ravel().astype(np.int64)
    if c.size == 0:
        return 0.0
    counts = np.bincount(c - c.min())
    counts = counts[counts > 0]
    p = counts / counts.sum()
    return float(-(counts * np.log2(p)).sum())


def _model(counts: np.ndarray):
    import constriction

    p = counts.astype(np.float64) / float(counts.sum())
    return constriction.stream.model.Categorical(p, perfect=False)


def encode_codes(codes) -> bytes:
    """Range-code an integer array (flattened) into a self-describing blob."""
    import constriction

    c = np.asarray(codes).ravel().astype(np.int64)
    if c.size == 0:
        return _HEAD.pack(0, 0, 0)
    lo = int(c.min())
    k = int(c.max()) - lo + 1
    if k > MAX_SYMBOLS or not -(2 ** 31) <= lo < 2 ** 31:
        raise PgolfError(f"entropy coder: codes {lo}..{lo + k - 1} span {k} values; it takes at most "
                         f"{MAX_SYMBOLS} from an int32 offset (a turbo-rd step too fine for these weights)")
    sym = (c - lo).astype(np.int32)
    counts = np.bincount(sym, minlength=k).astype(np.uint32)
    if k == 1:
        return _HEAD.pack(c.size, lo, k) + counts.tobytes()
    enc = constriction.stream.queue.RangeEncoder()
    enc.encode(sym, _model(counts))
    words = np.asarray(enc.get_compressed(), dtype="<u4")
    return _HEAD.pack(c.size, lo, k) + counts.astype("<u4").tobytes() + words.tobytes()


def decode_codes(blob: bytes, expected_n: int | None = None) -> np.ndarray:
    """Inverse of :func:`encode_codes`: int64 array; ArtifactError on a malformed blob or
    (before anything is allocated) a symbol count other than ``expected_n``."""
    import constriction

    if len(blob) < _HEAD.size:
        raise ArtifactError("entropy-coded segment is shorter than its header")
    n, lo, k = _HEAD.unpack_from(blob)
    if expected_n is not None and n != expected_n:
        raise ArtifactError(f"entropy-coded segment holds {n} codes, expected {expected_n}")
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if not 1 <= k <= MAX_SYMBOLS or len(blob) < _HEAD.size + 4 * k or (len(blob) - _HEAD.size) % 4:
        raise ArtifactError(f"entropy-coded segment: bad symbol count {k} or length {len(blob)}")
    counts = np.frombuffer(blob, dtype="<u4", count=k, offset=_HEAD.size).astype(np.int64)
    if int(counts.sum()) != n:
        raise ArtifactError(f"entropy-coded segment: counts sum to {int(counts.sum())}, header says {n}")
    if k == 1:
        return np.full(n, lo, dtype=np.int64)
    words = np.frombuffer(blob, dtype="<u4", offset=_HEAD.size + 4 * k).astype(np.uint32)
    try:
        sym = constriction.stream.queue.RangeDecoder(words).decode(_model(counts), int(n))
    except Exception as e:  # constriction raises its own error types
        raise ArtifactError(f"entropy-coded segment is corrupt ({e})") from None
    out = np.asarray(sym, dtype=np.int64) + lo
    if out.min() < lo or out.max() >= lo + k:
        raise ArtifactError("entropy-coded segment decodes outside its alphabet")
    return out
