"""Per-group compression: segments bucketed by name, each bucket through brotli or LZMA.

Segments of similar statistics (all MLP codes, all attention codes, all scales) compress
better together than interleaved. :class:`GroupWriter` collects byte segments under a
group name and returns a reference ``[group, offset, length]`` (offset inside the
uncompressed group); :meth:`GroupWriter.finish` compresses every group with brotli
(quality 11) and with LZMA (preset 9 | extreme) and keeps the smaller (``codec`` per
group; ``raw`` when neither helps). :class:`GroupReader` decompresses a group once,
checks its length, and serves segments; every failure is one-line ArtifactError::

    w = GroupWriter(); ref = w.add("mlp", codes_bytes)
    table, blob = w.finish()                  # table: [{"name","codec","len","raw_len"}]
    GroupReader(table, blob).segment(ref)     # == codes_bytes
"""

from __future__ import annotations

import lzma

from pgolf.errors import ArtifactError
from pgolf.quant.format.container import codec_errors

GROUP_CODECS = ("raw", "brotli", "lzma")
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]


def compress_best(data: bytes, codecs=("brotli", "lzma")) -> tuple[str, bytes]:
    """``(codec, stream)``: the smallest of the given codecs (and raw)."""
    best = ("raw", data)
    for codec in codecs:
        out = _compress(data, codec)
        if len(out) < len(best[1]):
            best = (codec, out)
    return best


def _compress(data: bytes, codec: str) -> bytes:
    if codec == "brotli":
        import brotli

        return brotli.compress(data, quality=11)
    if codec == "lzma":
        return lzma.compress(data, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
    return data


def decompress_group(stream: bytes, codec: str, raw_len: int) -> bytes:
    """Decompress one group; ArtifactError if corrupt or of the wrong length."""
    with codec_errors("compressed group", codec):  # output bounded by raw_len + 1: a bomb stops there
        if codec == "brotli":
            import brotli

            dec = brotli.Decompressor()
            out = dec.process(stream, output_buffer_limit=raw_len + 1)
            ended = dec.is_finished()
        elif codec == "lzma":
            dec = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
            out = dec.decompress(stream, max_length=raw_len + 1)
            ended = dec.eof
        elif codec == "raw":
            out, ended = stream, True
        else:
            raise ArtifactError(f"unknown group codec {codec!r}")
    if len(out) != raw_len or not ended:
        more = "more than " if len(out) >= raw_len else ""
        raise ArtifactError(f"group decompresses to {more}{len(out):,} bytes, its table entry says {raw_len:,}")
    return out


class GroupWriter:
    """Collects segments per group name (insertion order kept)."""

    def __init__(self):
        self.parts: dict[str, list[bytes]] = {}
        self.sizes: dict[str, int] = {}

    def add(self, group: str, data: bytes) -> list:
        self.parts.setdefault(group, []).append(bytes(data))
        off = self.sizes.get(group, 0)
        self.sizes[group] = off + len(data)
        return [group, off, len(data)]

    def finish(self, raw_groups=(), codecs=("brotli", "lzma")) -> tuple[list[dict], bytes]:
        """``(group table, concatenated compressed groups)``; ``raw_groups`` are stored as is."""
        table, blobs = [], []
        for name, parts in self.parts.items():
            raw = b"".join(parts)
            codec, stream = compress_best(raw, () if name in raw_groups else codecs)
            table.append({"name": name, "codec": codec, "len": len(stream), "raw_len": len(raw)})
            blobs.append(stream)
        return table, b"".join(blobs)


class GroupReader:
    """Serves ``[group, offset, length]`` segments from a finished group blob (the table is
    validated first: :func:`pgolf.quant.schemes.grouped.check_grouped_header`)."""

    def __init__(self, table: list[dict], blob: bytes):
        self.index: dict[str, tuple[int, dict]] = {}
        off = 0
        for g in table:
            n = int(g["len"])
            if n < 0 or off + n > len(blob):
                raise ArtifactError(f"group {g.get('name')!r} lies outside the {len(blob)}-byte body")
            if g["codec"] not in GROUP_CODECS:
                raise ArtifactError(f"group {g.get('name')!r}: unknown codec {g['codec']!r}")
            self.index[str(g["name"])] = (off, g)
            off += n
        self.blob = blob
        self.cache: dict[str, bytes] = {}

    def group(self, name: str) -> bytes:
        if name not in self.cache:
            if name not in self.index:
                raise ArtifactError(f"segment refers to unknown group {name!r}")
            off, g = self.index[name]
            self.cache[name] = decompress_group(self.blob[off : off + int(g["len"])], g["codec"], int(g["raw_len"]))
        return self.cache[name]

    def segment(self, ref) -> bytes:
        name, off, n = str(ref[0]), int(ref[1]), int(ref[2])
        data = self.group(name)
        if off < 0 or n < 0 or off + n > len(data):
            raise ArtifactError(f"segment [{off}, {off + n}) lies outside group {name!r} ({len(data)} bytes)")
        return data[off : off + n]
