"""Bit packing of small unsigned integers (the artifact's index streams).

:func:`pack_bits` stores ``n`` values of ``b`` bits (1 <= b <= 8) in exactly
``ceil(n*b/8)`` bytes as one little-endian bit stream (value ``i`` occupies bits
``i*b .. i*b+b-1``); :func:`unpack_bits` inverts it. Both check ``bits`` and the value
range before touching the data. The compression codecs live in
:mod:`pgolf.quant.format.container`. Example::

    buf = pack_bits(np.array([3, 0, 2], np.uint8), 2)   # 1 byte
    assert (unpack_bits(buf, 3, 2) == [3, 0, 2]).all()
"""

from __future__ import annotations

import numpy as np

from pgolf.errors import ArtifactError

_CHUNK = 1 << 22  # values per chunk, bounds temporary memory


def _check_bits(bits: int) -> None:
    if not 1 <= bits <= 8:
        raise ValueError(f"bit packing needs bits in 1..8, got {bits}")


def packed_size(n: int, bits: int) -> int:
    """Bytes that :func:`pack_bits` uses for ``n`` values of ``bits`` bits."""
    return (int(n) * int(bits) + 7) // 8


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """Pack unsigned integers ``< 2**bits`` into a little-endian bit stream."""
    _check_bits(bits)
    a = np.asarray(values).ravel()
    if a.size and (a.dtype.kind not in "iub" or int(a.min()) < 0 or int(a.max()) >= (1 << bits)):
        raise ValueError(f"pack_bits: values must be integers in 0..{(1 << bits) - 1} for {bits} bits")
    v = np.ascontiguousarray(a, dtype=np.uint8)
    if bits == 8:
        return v.tobytes()
    shifts = np.arange(bits, dtype=np.uint8)
    out = []
    step = _CHUNK - _CHUNK % 8  # a multiple of 8 values always ends on a byte boundary
    for start in range(0, v.size, step):
        chunk = v[start : start + step]
        bitmat = (chunk[:, None] >> shifts[None, :]) & 1
        out.append(np.packbits(bitmat.ravel(), bitorder="little").tobytes())
    return b"".join(out)


def unpack_bits(buf: bytes, n: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``n`` uint8 values from ``buf``."""
    _check_bits(bits)
    if len(buf) != packed_size(n, bits):
        raise ArtifactError(f"packed segment has {len(buf)} bytes, expected {packed_size(n, bits)}")
    raw = np.frombuffer(buf, dtype=np.uint8)
    if bits == 8:
        return raw.copy()
    weights = (1 << np.arange(bits, dtype=np.uint8)).astype(np.uint8)
    out = np.empty(n, dtype=np.uint8)
    step = _CHUNK - _CHUNK % 8
    for start in range(0, n, step):
        m = min(step, n - start)
        byte0 = start * bits // 8
        bitv = np.unpackbits(raw[byte0 : byte0 + packed_size(m, bits)], count=m * bits, bitorder="little")
        out[start : start + m] = (bitv.reshape(m, bits) * weights).sum(axis=1, dtype=np.uint8)
    return out
