"""Bit packing of small unsigned integers and the artifact's compression codecs.

:func:`pack_bits` stores ``n`` values of ``b`` bits (1 <= b <= 8) in exactly
``ceil(n*b/8)`` bytes as one little-endian bit stream (value ``i`` occupies bits
``i*b .. i*b+b-1``); :func:`unpack_bits` inverts it. Codecs: ``lzma`` (xz container,
preset from the config), ``zstd`` (needs the ``zstandard`` package, level 19) and
``none``. Example::

    buf = pack_bits(np.array([3, 0, 2], np.uint8), 2)   # 1 byte
    assert (unpack_bits(buf, 3, 2) == [3, 0, 2]).all()
"""

from __future__ import annotations

import numpy as np

from pgolf.errors import ArtifactError, ConfigError

CODECS = {"none": 0, "lzma": 1, "zstd": 2}
_CHUNK = 1 << 22  # values per chunk, bounds temporary memory


def packed_size(n: int, bits: int) -> int:
    """Bytes that :func:`pack_bits` uses for ``n`` values of ``bits`` bits."""
    return (int(n) * int(bits) + 7) // 8


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """Pack unsigned integers ``< 2**bits`` into a little-endian bit stream."""
    v = np.ascontiguousarray(values, dtype=np.uint8).ravel()
    if not 1 <= bits <= 8:
        raise ValueError(f"pack_bits: bits must be in 1..8, got {bits}")
    if v.size and int(v.max()) >= (1 << bits):
        raise ValueError(f"pack_bits: value {int(v.max())} does not fit in {bits} bits")
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


def compress(data: bytes, codec: str, lzma_preset: int = 6) -> bytes:
    """Compress with the named codec."""
    if codec == "none":
        return data
    if codec == "lzma":
        import lzma

        return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_NONE, preset=int(lzma_preset))
    if codec == "zstd":
        return _zstd().ZstdCompressor(level=19).compress(data)
    raise ConfigError(f"unknown codec {codec!r}; choose one of: {', '.join(CODECS)}")


def decompress(data: bytes, codec: str, expected_len: int) -> bytes:
    """Decompress; ArtifactError if the stream is corrupt or of the wrong length."""
    try:
        if codec == "none":
            out = data
        elif codec == "lzma":
            import lzma

            out = lzma.decompress(data, format=lzma.FORMAT_XZ)
        elif codec == "zstd":
            out = _zstd().ZstdDecompressor().decompress(data, max_output_size=expected_len)
        else:
            raise ArtifactError(f"unknown codec {codec!r}")
    except ArtifactError:
        raise
    except Exception as e:  # codec libraries raise their own error types
        raise ArtifactError(f"compressed stream is corrupt ({codec}: {e})") from None
    if len(out) != expected_len:
        raise ArtifactError(f"decompressed {len(out)} bytes, header says {expected_len}")
    return out


def _zstd():
    try:
        import zstandard
    except ImportError:
        raise ConfigError("codec zstd needs the 'zstandard' package (pip install zstandard)") from None
    return zstandard
