"""The artifact container: prelude, checksums, capped decompression and a strict JSON header.

The container knows bytes, lengths and checksums only; what the header means is checked
by :mod:`pgolf.quant.format.header` against the model the header describes. Layout (little-endian,
see docs/ARTIFACT.md)::

    prelude (34 bytes): magic b"PGOLFQ" | version u16 | codec u8 | 0 u8 |
                        stream_len u64 | raw_len u64 | stream_crc32 u32 | prelude_crc32 u32
    stream = codec(raw),  raw = header_len u32 | header JSON (utf-8) | body

:func:`open_stream` checks the prelude and both checksums and returns a :class:`RawReader`
that decompresses on demand and never yields more than the declared ``raw_len`` (itself
capped at :data:`MAX_RAW_BYTES`): the header is read and validated first, the body only
after. :func:`parse_header_json` rejects NaN/Infinity, huge integers and deep nesting.
Every failure is an :class:`ArtifactError` with one line. Codecs: ``none``, ``lzma`` (xz)
and ``zstd`` (:mod:`pgolf.quant.format.zstd_codec`, loaded through :mod:`pgolf.features`). Example::

    reader = open_stream(data)
    header = parse_header_json(reader.read_header())
    body = reader.read_body(expected_len)
"""

from __future__ import annotations

import io
import json
import math
import struct
import zlib
from contextlib import contextmanager

from pgolf import features
from pgolf.errors import ArtifactError, ConfigError

MAGIC = b"PGOLFQ"
VERSION = 1
CODECS = {"none": 0, "lzma": 1, "zstd": 2}
PRELUDE = struct.Struct("<6sHBBQQI")  # + u32 prelude crc
PRELUDE_SIZE = PRELUDE.size + 4
MAX_RAW_BYTES = 1 << 28  # 256 MiB of decompressed payload: ~16x the challenge's whole budget
MAX_HEADER_BYTES = 1 << 24  # 16 MiB of JSON header
_DECODER_MEMORY = 1 << 27  # LZMA dictionary / zstd window a stream may ask for
_MAX_INT_DIGITS = 20


def seal(raw: bytes, codec: str, lzma_preset: int = 6) -> bytes:
    """Prelude + compressed ``raw`` (``header_len | header | body``)."""
    stream = compress(raw, codec, lzma_preset)
    pre = PRELUDE.pack(MAGIC, VERSION, CODECS[codec], 0, len(stream), len(raw), zlib.crc32(stream))
    return pre + struct.pack("<I", zlib.crc32(pre)) + stream


def compress(data: bytes, codec: str, lzma_preset: int = 6) -> bytes:
    """Compress with the named codec."""
    if codec == "none":
        return data
    if codec == "lzma":
        import lzma

        return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_NONE, preset=int(lzma_preset))
    if codec == "zstd":
        return features.load("quant.codec", codec).compress(data)
    raise ConfigError(f"unknown codec {codec!r}; choose one of: {', '.join(CODECS)}")


class RawReader:
    """Decompresses the stream on demand; never yields more than ``raw_len`` bytes in all."""

    def __init__(self, stream: bytes, codec: str, raw_len: int):
        self.codec, self.raw_len, self.done = codec, raw_len, 0
        if codec == "none":
            self._src = io.BytesIO(stream)
        elif codec == "lzma":
            import lzma

            self._lzma = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=_DECODER_MEMORY)
            self._pending = stream
        else:
            self._src = features.load("quant.codec", codec).reader(stream, max_window=_DECODER_MEMORY)

    def read(self, n: int, what: str) -> bytes:
        """Exactly ``n`` more bytes of the raw payload, or ArtifactError."""
        if n < 0 or self.done + n > self.raw_len:
            raise ArtifactError(f"artifact {what} needs {n} bytes but the payload declares only {self.raw_len}")
        with codec_errors("compressed stream", self.codec):
            out = self._read(n)
        if len(out) != n:
            raise ArtifactError(f"compressed stream ends early: {what} needs {n} bytes, got {len(out)}")
        self.done += n
        return out

    def _read(self, n: int) -> bytes:
        if self.codec != "lzma":
            parts, left = [], n
            while left:
                chunk = self._src.read(left)
                if not chunk:
                    break
                parts.append(chunk)
                left -= len(chunk)
            return b"".join(parts)
        parts, left = [], n
        while left and not self._lzma.eof:
            chunk = self._lzma.decompress(self._pending, max_length=left)
            self._pending = b""
            if not chunk and self._lzma.needs_input:
                break
            parts.append(chunk)
            left -= len(chunk)
        return b"".join(parts)

    def read_header(self) -> bytes:
        """The JSON header bytes (length-prefixed, capped at :data:`MAX_HEADER_BYTES`)."""
        (hlen,) = struct.unpack("<I", self.read(4, "header length"))
        if hlen > MAX_HEADER_BYTES:
            raise ArtifactError(f"artifact header declares {hlen:,} bytes (limit {MAX_HEADER_BYTES:,})")
        return self.read(hlen, "header")

    def read_body(self, body_len: int) -> bytes:
        """The body: exactly the rest of the payload, which must be ``body_len`` bytes."""
        if self.done + body_len != self.raw_len:
            raise ArtifactError(f"artifact tensor table describes a {body_len:,}-byte body but the payload "
                                f"holds {self.raw_len - self.done:,}")
        body = self.read(body_len, "body")
        with codec_errors("compressed stream", self.codec):
            extra = self._read(1) or (self.codec == "lzma" and self._lzma.unused_data)
        if extra:
            raise ArtifactError(f"compressed stream holds more than the declared {self.raw_len:,} bytes")
        return body


@contextmanager
def codec_errors(what: str, codec: str):
    """Turn a codec library's own exception inside the block into a one-line ArtifactError."""
    try:
        yield
    except ArtifactError:
        raise
    except Exception as e:  # codec libraries raise their own error types
        raise ArtifactError(f"{what} is corrupt ({codec}: {_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    lines = str(e).splitlines()
    return lines[0][:160] if lines else type(e).__name__


def open_stream(data: bytes, max_raw_bytes: int = MAX_RAW_BYTES) -> RawReader:
    """Check prelude, version, lengths and checksums; a reader over the payload."""
    if len(data) < PRELUDE_SIZE:
        raise ArtifactError(f"truncated artifact: {len(data)} bytes is shorter than the {PRELUDE_SIZE}-byte prelude")
    if data[:6] != MAGIC:
        raise ArtifactError(f"not a pgolf artifact (bad magic {bytes(data[:6])!r})")
    _, version, codec_id, _, stream_len, raw_len, stream_crc = PRELUDE.unpack_from(data)
    (pre_crc,) = struct.unpack_from("<I", data, PRELUDE.size)
    if zlib.crc32(data[: PRELUDE.size]) != pre_crc:
        raise ArtifactError("corrupt artifact: prelude checksum mismatch")
    if version != VERSION:
        raise ArtifactError(f"unsupported artifact version {version} (this pgolf reads version {VERSION})")
    codec = {v: k for k, v in CODECS.items()}.get(codec_id)
    if codec is None:
        raise ArtifactError(f"unknown codec id {codec_id} in artifact")
    stream = data[PRELUDE_SIZE:]
    if len(stream) != stream_len:
        kind = "truncated" if len(stream) < stream_len else "oversized"
        raise ArtifactError(f"{kind} artifact: payload has {len(stream)} bytes, prelude says {stream_len}")
    if zlib.crc32(stream) != stream_crc:
        raise ArtifactError("corrupt artifact: payload checksum mismatch")
    if raw_len > max_raw_bytes:
        raise ArtifactError(f"artifact declares {raw_len:,} decompressed bytes (limit {max_raw_bytes:,})")
    if codec == "none" and raw_len != stream_len:
        raise ArtifactError(f"uncompressed artifact: payload has {stream_len} bytes, prelude says {raw_len}")
    return RawReader(bytes(stream), codec, raw_len)


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise ArtifactError(f"artifact header holds an integer of {len(text)} digits")
    return int(text)


def _finite_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise ArtifactError(f"artifact header holds a non-finite number {text[:20]}")
    return v


def _no_constant(name: str):
    raise ArtifactError(f"artifact header holds the non-finite number {name}")


def parse_header_json(raw: bytes) -> dict:
    """The header object: strict JSON (finite numbers, short integers, bounded nesting)."""
    try:
        header = json.loads(raw.decode("utf-8"), parse_int=_bounded_int, parse_float=_finite_float,
                            parse_constant=_no_constant)
    except ArtifactError:
        raise
    except RecursionError:
        raise ArtifactError("artifact header JSON is nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise ArtifactError(f"artifact header is not valid JSON ({_first_line(e)})") from None
    if not isinstance(header, dict) or header.get("format") != "pgolf-artifact":
        raise ArtifactError("artifact header lacks format 'pgolf-artifact'")
    return header
