"""Storage kinds of the artifact's tensor table: each checks its own entries and decodes them.

A kind (``raw``, ``fp16``, ``fp32``, ``int``, ``turbo``, ``turbo-prod``) is registered by
name in :data:`KINDS`. :meth:`StorageKind.check` validates an entry's bits and codebook
against the tensor's shape and returns the exact byte size of each segment it needs,
allocating nothing; :meth:`StorageKind.decode` turns the validated segments into a tensor
and rejects non-finite norms, scales, codebooks and stored values. A new scheme registers
its kind with :func:`add_kind`; :mod:`pgolf.quant.format.header` calls ``check`` for every entry
before any decompression, and :mod:`pgolf.quant.format.artifact` calls ``decode`` after. Example::

    sizes = KINDS["turbo"].check(entry, (96, 32), ctx)     # {"norms": 192, "idx": 768}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from pgolf.errors import ArtifactError
from pgolf.quant.format import packing
from pgolf.quant.schemes import rowint, turbo
from pgolf.quant.schemes.rotation import ROTATIONS, qjl_tensor, rotation_tensor

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "float64": torch.float64, "int64": torch.int64, "int32": torch.int32,
          "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool}
#: Largest rotation a reader builds (a dense float64 d x d QR); the seed's widest row is 2016.
MAX_ROTATION_DIM = 4096


@dataclass
class KindContext:
    """What a kind sees: the quant config and the header's (validated) codebooks."""

    qcfg: object
    codebooks: list = field(default_factory=list)
    levels: dict = field(default_factory=dict)  # codebook index -> decoded levels (once each)


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _bits(e: dict, low: int, high: int = 8) -> int:
    b = e.get("bits")
    if not is_int(b) or not low <= b <= high:
        raise ArtifactError(f"tensor {e['name']}: bits {repr(b)[:20]} outside {low}..{high} for kind {e['kind']}")
    return b


def _rows(shape) -> tuple[int, int]:
    rows = shape[0]
    return rows, math.prod(shape) // max(rows, 1)


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty(0, dtype=dtype).element_size()


def finite(t: torch.Tensor, what: str, e: dict, nonneg: bool = False) -> torch.Tensor:
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise ArtifactError(f"tensor {e['name']}: {what} holds NaN or inf")
    if nonneg and bool((t < 0).any()):
        raise ArtifactError(f"tensor {e['name']}: {what} holds a negative value")
    return t


def array(raw: bytes, dtype: torch.dtype, shape) -> torch.Tensor:
    """A tensor of ``dtype``/``shape`` copied from little-endian bytes (sizes already checked)."""
    if dtype == torch.bfloat16:
        arr = torch.from_numpy(np.frombuffer(raw, dtype="<i2").copy()).view(torch.bfloat16)
    else:
        arr = torch.from_numpy(np.frombuffer(raw, dtype=torch.empty(0, dtype=dtype).numpy().dtype).copy())
    return arr.reshape([int(s) for s in shape])


class StorageKind:
    """One storage kind: ``check`` (sizes, no allocation) and ``decode`` (validated bytes)."""

    name = ""

    def check(self, e: dict, shape: tuple, ctx: KindContext) -> dict[str, int]:
        raise NotImplementedError

    def decode(self, e: dict, shape: tuple, segs: dict[str, bytes], ctx: KindContext) -> torch.Tensor:
        raise NotImplementedError


class Plain(StorageKind):
    """``raw`` (exact, the entry's dtype), ``fp16`` and ``fp32`` (cast back to the entry's dtype)."""

    def __init__(self, name: str, stored: str | None):
        self.name, self.stored = name, stored

    def _dtype(self, e: dict) -> torch.dtype:
        return DTYPES[self.stored or e["dtype"]]

    def check(self, e, shape, ctx):
        return {"data": math.prod(shape) * _itemsize(self._dtype(e))}

    def decode(self, e, shape, segs, ctx):
        t = finite(array(segs["data"], self._dtype(e), shape), "data", e)
        return t.to(DTYPES[e["dtype"]])


class RowInt(StorageKind):
    """Per-row symmetric integers: fp16 ``scales`` [rows] and packed ``codes`` (b bits each)."""

    name = "int"

    def check(self, e, shape, ctx):
        rows, d = _rows(shape)
        return {"scales": 2 * rows, "codes": packing.packed_size(rows * d, _bits(e, 2))}

    def decode(self, e, shape, segs, ctx):
        rows, d = _rows(shape)
        bits = e["bits"]
        scales = finite(array(segs["scales"], torch.float16, [rows]), "scales", e, nonneg=True)
        codes = packing.unpack_bits(segs["codes"], rows * d, bits)
        q = torch.from_numpy(codes.astype(np.int16) - rowint.qmax_of(bits)).to(torch.int8).reshape(rows, d)
        return rowint.dequantize_rows(q, scales).reshape(shape).to(DTYPES[e["dtype"]])


class Turbo(StorageKind):
    """TurboQuant: fp16 row ``norms``, packed codebook ``idx``; ``-prod`` adds QJL ``signs``/``rnorms``."""

    def __init__(self, name: str, prod: bool):
        self.name, self.prod = name, prod

    def check(self, e, shape, ctx):
        rows, d = _rows(shape)
        rot = ctx.qcfg.rotation
        if rot not in ROTATIONS or (rot == "hadamard" and d % 2):
            raise ArtifactError(f"tensor {e['name']}: rotation {str(rot)[:20]!r} cannot be built for d={d}")
        if d > MAX_ROTATION_DIM:
            raise ArtifactError(f"tensor {e['name']}: rotation dimension {d} exceeds this reader's "
                                f"limit {MAX_ROTATION_DIM}")
        mse_bits = _bits(e, 2 if self.prod else 1) - self.prod
        i = e.get("codebook")
        if not is_int(i) or not 0 <= i < len(ctx.codebooks):
            raise ArtifactError(f"tensor {e['name']}: codebook index {repr(i)[:20]} outside 0..{len(ctx.codebooks) - 1}")
        cb = ctx.codebooks[i]
        if cb["bits"] != mse_bits or cb["d"] != d:
            raise ArtifactError(f"tensor {e['name']}: needs a {mse_bits}-bit codebook for d={d}, "
                                f"codebook {i} is {cb['bits']}-bit for d={cb['d']}")
        sizes = {"norms": 2 * rows, "idx": packing.packed_size(rows * d, mse_bits)}
        if self.prod:
            sizes.update(rnorms=2 * rows, signs=packing.packed_size(rows * d, 1))
        return sizes

    def decode(self, e, shape, segs, ctx):
        rows, d = _rows(shape)
        q = ctx.qcfg
        levels = ctx.levels[e["codebook"]]
        mse_bits = e["bits"] - self.prod
        norms = finite(array(segs["norms"], torch.float16, [rows]), "norms", e, nonneg=True)
        idx = torch.from_numpy(packing.unpack_bits(segs["idx"], rows * d, mse_bits).astype(np.int64)).reshape(rows, d)
        rot = rotation_tensor(q.rotation, q.rotation_seed, d)  # cached: each distinct d is built once
        if not self.prod:
            w = turbo.dequantize_mse(norms, idx, rot, levels)
        else:
            signs = torch.from_numpy(packing.unpack_bits(segs["signs"], rows * d, 1).astype(bool)).reshape(rows, d)
            rnorms = finite(array(segs["rnorms"], torch.float16, [rows]), "rnorms", e, nonneg=True)
            w = turbo.dequantize_prod(norms, idx, signs, rnorms, rot, levels, qjl_tensor(q.rotation_seed, d))
        return w.reshape(shape).to(DTYPES[e["dtype"]])


def codebook_levels(cb: dict, raw: bytes, i: int) -> torch.Tensor:
    """Levels of codebook ``i``: ``2**bits`` finite float32 values in strictly increasing order."""
    levels = torch.from_numpy(np.frombuffer(raw, dtype="<f4").copy())
    if not bool(torch.isfinite(levels).all()):
        raise ArtifactError(f"codebook {i} holds NaN or inf")
    if levels.numel() > 1 and not bool((levels[1:] > levels[:-1]).all()):
        raise ArtifactError(f"codebook {i} is not sorted in strictly increasing order")
    return levels


KINDS: dict[str, StorageKind] = {}


def add_kind(kind: StorageKind) -> StorageKind:
    """Add ``kind`` to :data:`KINDS` under its name (a new scheme's storage)."""
    KINDS[kind.name] = kind
    return kind


for _k in (Plain("raw", None), Plain("fp16", "float16"), Plain("fp32", "float32"), RowInt(),
           Turbo("turbo", False), Turbo("turbo-prod", True)):
    add_kind(_k)
