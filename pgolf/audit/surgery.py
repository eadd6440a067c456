"""Byte surgery on artifacts for :mod:`pgolf.audit.fuzz`: open, edit and reseal the container.

Writes the container layout itself (prelude, checksum, codec; see docs/ARTIFACT.md)
rather than calling pgolf's writer, so a case can carry any bytes: :func:`unseal` and
:func:`reseal` open and close a payload with valid checksums, :func:`split_raw` and
:func:`join_raw` separate the header JSON from the body, :func:`with_header` and
:func:`dumps_with` edit the header (raw, possibly invalid JSON values included),
:func:`bomb` builds decompression bombs, and :func:`base_artifact` the valid artifacts of
one tiny model that every case starts from (each scheme with the codec in
:data:`SCHEMES`). Nothing here decodes an artifact. Example::

    codec, raw = unseal(data); header, body = split_raw(raw)
    evil = reseal(join_raw(dumps_with(header, {}), body), codec)
"""

from __future__ import annotations

import json
import struct
import zlib

_PRELUDE = struct.Struct("<6sHBBQQI")
_PRE = _PRELUDE.size + 4
_CODEC_NONE, _CODEC_LZMA, _CODEC_ZSTD = 0, 1, 2
#: Every storage scheme and the container codec its base artifact uses (grouped: "none").
SCHEMES = {"turbo": "lzma", "turbo-prod": "zstd", "int6": "none", "int8": "lzma", "record": "none", "turbo-rd": "none"}
#: Zeros appended to a valid payload in the bomb streams (decompressed size, not file size).
BOMB_BYTES = 1 << 30


def compress(raw: bytes, codec: int) -> bytes:
    if codec == _CODEC_LZMA:
        import lzma

        return lzma.compress(raw, format=lzma.FORMAT_XZ, check=lzma.CHECK_NONE, preset=0)
    if codec == _CODEC_ZSTD:
        import zstandard

        return zstandard.ZstdCompressor(level=1).compress(raw)
    return raw


def decompress(stream: bytes, codec: int) -> bytes:
    """Decompress one of our own base artifacts (trusted input)."""
    if codec == _CODEC_LZMA:
        import lzma

        return lzma.decompress(stream)
    if codec == _CODEC_ZSTD:
        import zstandard

        return zstandard.ZstdDecompressor().decompress(stream)
    return stream


def seal(stream: bytes, codec: int, raw_len: int, version: int = 1) -> bytes:
    """A container around ``stream`` with valid checksums, whatever it holds."""
    pre = _PRELUDE.pack(b"PGOLFQ", version, codec, 0, len(stream), raw_len, zlib.crc32(stream))
    return pre + struct.pack("<I", zlib.crc32(pre)) + stream


def reseal(raw: bytes, codec: int) -> bytes:
    return seal(compress(raw, codec), codec, len(raw))


def unseal(data: bytes) -> tuple[int, bytes]:
    """``(codec id, raw payload)`` of a valid artifact."""
    codec = _PRELUDE.unpack_from(data)[2]
    return codec, decompress(data[_PRE:], codec)


def split_raw(raw: bytes) -> tuple[dict, bytes]:
    (hlen,) = struct.unpack_from("<I", raw)
    return json.loads(raw[4 : 4 + hlen]), raw[4 + hlen :]


def join_raw(header_text: bytes, body: bytes) -> bytes:
    return struct.pack("<I", len(header_text)) + header_text + body


def with_header(data: bytes, edit) -> bytes:
    """Reseal ``data`` after ``edit(header, body) -> (header text bytes, body)``."""
    codec, raw = unseal(data)
    header, body = split_raw(raw)
    text, body = edit(header, body)
    return reseal(join_raw(text, body), codec)


def dumps_with(header: dict, raw_values: dict[str, str]) -> bytes:
    """JSON of ``header`` where string placeholders are replaced by raw (possibly invalid) JSON text."""
    text = json.dumps(header, separators=(",", ":"))
    for key, raw in raw_values.items():
        text = text.replace(json.dumps(key), raw)
    return text.encode("utf-8")


# ------------------------------------------------------------------------- base artifacts


def tiny_config():
    from pgolf.presets import get_preset

    cfg = get_preset("tiny")
    m = cfg.model
    m.num_layers, m.model_dim, m.num_heads, m.num_kv_heads, m.vocab_size = 1, 32, 2, 1, 64
    m.bigram_buckets, m.bigram_dim, m.value_embed_dim, m.value_embed_layers, m.xsa_last_n = 16, 8, 8, (0,), 1
    cfg.quant.fp16_max_numel = 256
    return cfg


def base_artifact(scheme: str) -> bytes:
    """A valid artifact of one tiny model in ``scheme`` (codec per :data:`SCHEMES`; zstd only if installed)."""
    import torch

    from pgolf.model.gpt import GPT
    from pgolf.quant.format.artifact import build_artifact

    cfg = tiny_config()
    torch.manual_seed(0)
    sd = GPT(cfg.model).state_dict()
    g = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(t.shape, generator=g) * 0.05 if t.dim() == 2 else t for k, t in sd.items()}
    codec = SCHEMES[scheme]
    cfg.quant.scheme, cfg.quant.codec = scheme, "none" if codec == "zstd" and not _has_zstd() else codec
    return build_artifact(sd, cfg, target_bytes=20_000)[0]


def base_artifacts() -> list[bytes]:
    """Valid artifacts of one tiny model: turbo/lzma, turbo-prod/zstd (if installed), int6/none, int8/lzma."""
    return [base_artifact(s) for s in ("turbo", "turbo-prod", "int6", "int8")]


def _has_zstd() -> bool:
    try:
        import zstandard  # noqa: F401
    except ImportError:
        return False
    return True


def bomb(data: bytes, codec: int, zeros: int = BOMB_BYTES) -> bytes:
    """``data``'s payload plus ``zeros`` zero bytes, compressed, sealed with the *original* length.

    zstd: one frame that declares its full content size; LZMA: concatenated xz streams of
    64 MiB each (old readers decompress them all). Built in 1 MiB chunks (little memory).
    """
    _, raw = unseal(data)
    chunk = bytes(1 << 20)
    if codec == _CODEC_ZSTD:
        import io

        import zstandard

        buf = io.BytesIO()
        w = zstandard.ZstdCompressor(level=1).stream_writer(buf, size=len(raw) + zeros, closefd=False)
        w.write(raw)
        for _ in range(zeros >> 20):
            w.write(chunk)
        w.close()
        stream = buf.getvalue()
    else:
        import lzma

        def xz(head: bytes, n_mib: int) -> bytes:
            c = lzma.LZMACompressor(format=lzma.FORMAT_XZ, check=lzma.CHECK_NONE, preset=0)
            return b"".join([c.compress(head)] + [c.compress(chunk) for _ in range(n_mib)] + [c.flush()])

        tail = xz(b"", 64)
        stream = xz(raw, 64) + tail * max(zeros // (64 << 20) - 1, 0)
    return seal(stream, codec, len(raw))
