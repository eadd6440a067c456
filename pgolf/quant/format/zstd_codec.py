"""Codec ``zstd`` of the artifact container (``quant.codec = "zstd"``; optional ``zstandard`` package).

:mod:`pgolf.quant.format.container` reaches this module only through
``pgolf.features.load("quant.codec", "zstd")``, when it writes a zstd artifact or reads
one (the codec id in the prelude says so), so a train_gpt.py whose config compresses
with LZMA does not carry it. Without ``zstandard`` installed, writing fails with a
ConfigError and reading with an ArtifactError, one line each::

    stream = compress(raw)                            # one frame, level 19
    src = reader(stream, max_window=1 << 27)          # file-like: src.read(n)
"""

from __future__ import annotations

import io

from pgolf.errors import ArtifactError, ConfigError


def _zstandard(error):
    try:
        import zstandard
    except ImportError:
        raise error("codec zstd needs the 'zstandard' package (pip install zstandard)") from None
    return zstandard


def compress(data: bytes) -> bytes:
    """``data`` as one zstd frame (level 19)."""
    return _zstandard(ConfigError).ZstdCompressor(level=19).compress(data)


def reader(stream: bytes, max_window: int):
    """A file-like reader of the decompressed ``stream`` (frames may follow one another);
    a frame asking for a window over ``max_window`` bytes fails on read."""
    dctx = _zstandard(ArtifactError).ZstdDecompressor(max_window_size=max_window)
    return dctx.stream_reader(io.BytesIO(stream), read_across_frames=True)
