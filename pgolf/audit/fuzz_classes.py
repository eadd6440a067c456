"""Systematic hostile-artifact classes for :mod:`pgolf.audit.fuzz` (every case, not a sample).

Given one valid artifact (any scheme), each generator yields ``(case name, bytes)``:

* :func:`bomb_cases`: decompression bombs at several sizes: the container's stream (xz,
  zstd) and, for grouped schemes (record, turbo-rd), one group or every group replaced by a
  brotli / LZMA / zstd stream of zeros, declared honestly in the group table or hidden
  behind the group's true length;
* :func:`nonfinite_cases`: NaN, +inf and -inf in every stored float field (norms, scales,
  codebooks, LQER factors, plain float data, turbo-rd steps) and a float32-overflowing step;
* :func:`config_cases`: every field of the embedded config at NaN, inf, negative, huge and
  wrong-typed values (as JSON the parser accepts);
* :func:`path_cases`: path-like, NUL-holding, pickled and huge strings in every string
  field, and data/tokenizer paths added to the config.

Bomb streams are built once per (codec, size) in 1 MiB chunks (little memory). Used by
``python -m pgolf.audit.fuzz --scheme all``; each case is decoded in an isolated child there.
"""

from __future__ import annotations

import json
import lzma
import math
import pickle

from pgolf.audit import surgery

BOMB_SIZES = (64 << 20, 256 << 20, 1 << 30)
_CHUNK = bytes(1 << 20)
_LZMA_FAST = [{"id": lzma.FILTER_LZMA2, "preset": 0}]  # the reader's preset-9 dictionary decodes it
_F2 = {"norms", "rnorms", "scales", "lqer_a_lo", "lqer_a_step", "lqer_b_lo", "lqer_b_step"}
_BAD = {  # little-endian NaN, +inf, -inf by storage format
    "f2": {"nan": b"\x00\x7e", "inf": b"\x00\x7c", "-inf": b"\x00\xfc"},
    "bf2": {"nan": b"\xc0\x7f", "inf": b"\x80\x7f", "-inf": b"\x80\xff"},
    "f4": {"nan": b"\x00\x00\xc0\x7f", "inf": b"\x00\x00\x80\x7f", "-inf": b"\x00\x00\x80\xff"},
}
NUMBER_VALUES = ['"nan"', '"inf"', '"-inf"', "-1", "1e308", "4611686018427387904", '"x"', "[]", "{}", "null", "true"]
OTHER_VALUES = ['"nan"', "3", "-1", "[]", "{}", "null", '"x"', "[[1e308]]"]
PATHS = ["/etc/passwd", "../../x", "..\\..\\x", "x\u0000y", pickle.dumps({"a": 1}).decode("latin-1"), "A" * 100_000]


# --------------------------------------------------------------------------- grouped bodies


def _compress(codec: str, chunks) -> bytes:
    """``codec`` stream of the concatenated ``chunks`` (an iterable of bytes)."""
    if codec == "brotli":
        import brotli

        c = brotli.Compressor(quality=5)
        return b"".join(c.process(x) for x in chunks) + c.finish()
    if codec == "lzma":
        c = lzma.LZMACompressor(format=lzma.FORMAT_RAW, filters=_LZMA_FAST)
        return b"".join(c.compress(x) for x in chunks) + c.flush()
    if codec == "zstd":
        import zstandard

        c = zstandard.ZstdCompressor(level=1).compressobj()
        return b"".join(c.compress(x) for x in chunks) + c.flush()
    return b"".join(chunks)


def _decompress(codec: str, stream: bytes) -> bytes:
    """One group of our own (trusted) base artifact."""
    if codec == "brotli":
        import brotli

        return brotli.decompress(stream)
    if codec == "lzma":
        from pgolf.quant.calibrate.groups import _LZMA_FILTERS

        return lzma.decompress(stream, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
    return stream


def open_groups(data: bytes) -> tuple[dict, dict[str, bytearray]]:
    """``(header, {group name: raw bytes})`` of a valid grouped artifact."""
    _, raw = surgery.unseal(data)
    header, body = surgery.split_raw(raw)
    groups, off = {}, 0
    for g in header["groups"]:
        groups[g["name"]] = bytearray(_decompress(g["codec"], body[off : off + g["len"]]))
        off += g["len"]
    return header, groups


def seal_groups(header: dict, streams: dict[str, tuple[str, bytes, int]], text: bytes | None = None) -> bytes:
    """A container (codec none) around ``header`` with each group's ``(codec, stream, raw_len)``."""
    for g in header["groups"]:
        g["codec"], stream, g["raw_len"] = streams[g["name"]]
        g["len"] = len(stream)
    body = b"".join(streams[g["name"]][1] for g in header["groups"])
    return surgery.reseal(surgery.join_raw(text or surgery.dumps_with(header, {}), body), surgery._CODEC_NONE)


def recompress(header: dict, groups: dict[str, bytes]) -> dict[str, tuple[str, bytes, int]]:
    """Each group recompressed with its own codec (raw groups stay raw)."""
    codecs = {g["name"]: g["codec"] for g in header["groups"]}
    return {n: (codecs[n], _compress(codecs[n], [bytes(b)]), len(b)) for n, b in groups.items()}


# --------------------------------------------------------------------------- bombs

_BOMBS: dict[tuple, bytes] = {}


def zero_bomb(codec: str, size: int) -> bytes:
    """``size`` zero bytes as a ``codec`` stream (cached)."""
    if (codec, size) not in _BOMBS:
        _BOMBS[codec, size] = _compress(codec, (_CHUNK[: min(1 << 20, size - i)] for i in range(0, size, 1 << 20)))
    return _BOMBS[codec, size]


def _group_codecs() -> list[str]:
    return ["brotli", "lzma"] + (["zstd"] if surgery._has_zstd() else [])


def bomb_cases(data: bytes, sizes=BOMB_SIZES):
    """Container bombs for every artifact; group bombs (one, hidden, every) for grouped ones."""
    for codec, cid in (("lzma", surgery._CODEC_LZMA), ("zstd", surgery._CODEC_ZSTD)):
        if cid == surgery._CODEC_ZSTD and not surgery._has_zstd():
            continue
        for size in sizes:
            yield f"bomb-container-{codec}-{size >> 20}MiB", surgery.bomb(data, cid, size)
    if "groups" not in surgery.split_raw(surgery.unseal(data)[1])[0]:
        return
    for codec in _group_codecs():
        for size in sizes:
            for how in ("declared", "hidden", "every"):
                yield f"bomb-group-{codec}-{size >> 20}MiB-{how}", group_bomb(data, codec, size, how)


def group_bomb(data: bytes, codec: str, size: int, how: str) -> bytes:
    """A grouped artifact whose first group (``every``: each group) inflates by ``size`` zero
    bytes: ``declared`` in the group table, or ``hidden`` behind the group's true length."""
    header, groups = open_groups(data)
    streams = recompress(header, groups)
    first = header["groups"][0]["name"]
    if how == "hidden":
        streams[first] = (codec, _compress(codec, [bytes(groups[first])] + [_CHUNK] * (size >> 20)), len(groups[first]))
    for name in groups if how == "every" else [first] if how == "declared" else []:
        streams[name] = (codec, zero_bomb(codec, size), size)
    return seal_groups(header, streams)


# --------------------------------------------------------------------------- non-finite values


def _float_segments(header: dict) -> list[tuple[str, list, str]]:
    """``(key, ref, format)`` of every stored float segment (``f2`` | ``bf2`` | ``f4``), codebooks too."""
    out = []
    for e in header["tensors"]:
        for key, ref in e.get("segments", {}).items():
            kind, dtype = e.get("kind"), e.get("dtype")
            if key in _F2:
                out.append((key, ref, "f2"))
            elif key == "data" and kind in ("fp16", "fp32", "raw"):
                fmt = {"fp16": "f2", "fp32": "f4"}.get(kind) or {"float16": "f2", "bfloat16": "bf2", "float32": "f4"}.get(dtype)
                if fmt:
                    out.append((key, ref, fmt))
    out += [("codebook", cb["segment"], "f4") for cb in header.get("codebooks", [])]
    return out


def _poke(buf: bytearray, off: int, n: int, bad: bytes) -> None:
    """``bad`` at the first element and at the last element of ``buf[off:off+n]``."""
    if n >= len(bad):
        buf[off : off + len(bad)] = bad
        last = off + (n // len(bad) - 1) * len(bad)
        buf[last : last + len(bad)] = bad


def nonfinite_cases(data: bytes):
    """NaN/+inf/-inf in every stored float field; NaN-like and overflowing header floats."""
    _, raw = surgery.unseal(data)
    header, body = surgery.split_raw(raw)
    grouped = "groups" in header
    for key, ref, fmt in _float_segments(header):
        for what, bad in _BAD[fmt].items():
            name = f"nonfinite-{key}-{what}"
            if grouped:
                h, groups = open_groups(data)
                _poke(groups[ref[0]], ref[1], ref[2], bad)
                yield name, seal_groups(h, recompress(h, groups))
            else:
                b = bytearray(body)
                _poke(b, ref[0], ref[1], bad)
                yield name, surgery.reseal(surgery.join_raw(surgery.dumps_with(header, {}), bytes(b)), surgery.unseal(data)[0])
    for field in ("step", "k"):
        for value in ('"nan"', "1e308", "3e38", "-1", "0", '"x"', "null"):
            if any(field in e for e in header["tensors"]):
                yield f"header-{field}-{value.strip(chr(34))}", _header_floats(data, field, value)


def _header_floats(data: bytes, field: str, value: str) -> bytes:
    def edit(header, body):
        for e in header["tensors"]:
            if field in e:
                e[field] = "\x00V"
        return surgery.dumps_with(header, {"\x00V": value}), body

    return surgery.with_header(data, edit)


# --------------------------------------------------------------------------- config and paths


def _config_edit(data: bytes, path: tuple, raw_value: str) -> bytes:
    def edit(header, body):
        node = header["config"]
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = "\x00V"
        return surgery.dumps_with(header, {"\x00V": raw_value}), body

    return surgery.with_header(data, edit)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def config_cases(data: bytes):
    """Every embedded-config field at nan/inf/negative/huge/wrong-typed values."""
    header, _ = surgery.split_raw(surgery.unseal(data)[1])
    for section, fields in header["config"].items():
        if not isinstance(fields, dict):
            continue
        for name, v in fields.items():
            values = NUMBER_VALUES if _is_number(v) else OTHER_VALUES
            if isinstance(v, list) and v and all(_is_number(x) for x in v):
                values = values + ["[" + x + "]" for x in NUMBER_VALUES[:6]]
            for raw in values:
                yield f"config-{section}.{name}={raw[:24]}", _config_edit(data, (section, name), raw)


def path_cases(data: bytes):
    """Path-like and hostile strings in every string field, the preset, and added path keys."""
    header, _ = surgery.split_raw(surgery.unseal(data)[1])
    cfg = header["config"]
    spots = [("preset",)] + [(s, n) for s, f in cfg.items() if isinstance(f, dict) for n, v in f.items()
                             if isinstance(v, str) or (isinstance(v, list) and v and isinstance(v[0], str))]
    for path in spots:
        current = cfg[path[0]] if len(path) == 1 else cfg[path[0]][path[1]]
        for i, s in enumerate(PATHS):
            raw = json.dumps([s] + list(current[1:]) if isinstance(current, list) else s)
            yield f"path-{'.'.join(path)}-{i}", _config_edit(data, path, raw)
    for key, value in (("data_dir", "/etc"), ("tokenizer", "/etc/passwd"), ("val_bytes", "/dev/zero")):
        yield f"path-config.{key}", _config_edit(data, (key,), json.dumps(value))
        yield f"path-header.{key}", surgery.with_header(data, lambda h, b, k=key, v=value: (
            surgery.dumps_with({**h, k: v}, {}), b))


CLASSES = {"bombs": bomb_cases, "nonfinite": nonfinite_cases, "config": config_cases, "paths": path_cases}


# --------------------------------------------------------------------------- the acceptance rule

#: Documented caps of what drives memory or time (README, "What an artifact may decide").
CAPS = {"eval.batch_seqs": 4096, "model.num_loops": 16, "ttt.lora_rank": 4096, "eval.two_pass_buckets": 1 << 26,
        "model.logit_softcap": 1e9, "eval.seq_len": 1 << 17, "eval.stride": 1 << 17, "train.seq_len": 1 << 17}


def config_problem(cfg) -> str | None:
    """Why an accepted artifact's config is not acceptable (None if it is): every number finite,
    0..2**31 and within :data:`CAPS`; strings short, without path separators or NUL; no keys
    beyond the preset and the five sections."""
    d = cfg.to_dict()
    if set(d) - {"preset", "model", "train", "quant", "eval", "ttt"}:
        return f"config keys {sorted(d)}"
    items = [("preset", d["preset"])] + [(f"{s}.{k}", v) for s in d if s != "preset" for k, v in d[s].items()]
    for key, v in items:
        for x in _flat(v):
            if isinstance(x, str) and (len(x) > 64 or any(c in x for c in "/\\\x00")):
                return f"{key}={x[:40]!r}"
            if _is_number(x) and not (math.isfinite(x) and 0 <= x <= CAPS.get(key, 2**31)):
                return f"{key}={x!r}"
    return None


def _flat(v):
    if isinstance(v, (list, tuple)):
        for x in v:
            yield from _flat(x)
    else:
        yield v

