"""The ``turbo-rd`` scheme: rotated-basis GPTQ onto a uniform grid, entropy coded, rate-allocated.

For a matrix ``W [rows, d]`` with input Hessian ``H``: row norms ``n`` are fixed first
(fp16), unit rows are rotated by the seeded ``d x d`` rotation ``R`` of
:mod:`pgolf.quant.schemes.rotation` (``U' = (W / n) R^T``, coordinates ~ N(0, 1/d)), and GPTQ
error feedback runs over the rotated coordinates with ``H' = R H R^T`` onto the uniform
grid ``step * Z`` (unbounded integers). The integers are range coded
(:mod:`pgolf.quant.format.entropy`). Decode: ``W_hat = n * (step * codes) R``. The per-tensor
``step`` comes from :mod:`pgolf.quant.calibrate.rdalloc` (one Lagrangian slope for the whole model,
fitted to a byte target). :class:`Prepared` holds everything that does not depend on the
step, so the allocator can re-encode cheaply::

    p = prepare(w, h, qcfg)                   # norms, rotated rows, GPTQ factor
    codes = encode(p, step, qcfg)             # float32 integers [rows, d]
    w_hat = dequantize(p.norms, codes, step, rotation)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from pgolf.errors import ArtifactError
from pgolf.quant.format import entropy
from pgolf.quant.calibrate.gptq import IntGrid, gptq, hessian_error, hessian_factor
from pgolf.quant.schemes.rotation import rotation_tensor
from pgolf.quant.schemes.turbo import _check_2d, _row_norms


@dataclass
class Prepared:
    """A matrix ready for quantization at any step."""

    norms: torch.Tensor  # fp16 [rows]
    unit_rot: torch.Tensor  # float32 [rows, d], rotated unit rows
    factor: tuple | None  # hessian_factor of H' (None: round to nearest)
    weight: float  # distortion coefficient a: loss (or output) error ~ step^2 * a
    numel: int
    h_rot: torch.Tensor | None = None  # H' = R H R^T, to keep GPTQ only where it helps


def rotation_of(qcfg, d: int) -> torch.Tensor:
    return rotation_tensor(qcfg.rotation, qcfg.rotation_seed, d)


def prepare(w: torch.Tensor, h, qcfg, sensitivity: float | None = None) -> Prepared:
    """Norms, rotated unit rows, the GPTQ factor of ``R H R^T`` and the distortion weight.

    The weight ``a`` (error ~ ``step^2 * a``) is the measured loss increase per unit
    step^2 (:mod:`pgolf.quant.calibrate.sensitivity`) when given, comparable across tensors;
    otherwise the plain squared error ``sum_i n_i^2 * d / 12``.
    """
    w = w.float()
    _check_2d(w)
    norms, unit = _row_norms(w)
    rot = rotation_of(qcfg, w.shape[1])
    u = unit @ rot.T
    n2 = float((norms.double() ** 2).sum())
    weight = float(sensitivity) if sensitivity is not None else n2 * w.shape[1] / 12.0
    if h is None:
        return Prepared(norms, u, None, weight, w.numel())
    r = rot.double()
    h_rot = r @ h.double() @ r.T
    factor = hessian_factor(h_rot, qcfg.gptq_damp, qcfg.gptq_act_order)
    return Prepared(norms, u, factor, weight, w.numel(), h_rot)


def encode(p: Prepared, step: float, qcfg) -> torch.Tensor:
    """Integer codes (float32) of the rotated unit rows on the grid ``step * Z``: GPTQ
    codes, or round-to-nearest ones where those have the lower ``H'``-weighted error."""
    scale = torch.full((p.unit_rot.shape[0],), float(step))
    rtn = gptq(p.unit_rot, None, scale, IntGrid(None))
    if p.factor is None:
        return rtn
    codes = gptq(p.unit_rot, None, scale, IntGrid(None), qcfg.gptq_damp, qcfg.gptq_block,
                 qcfg.gptq_act_order, factor=p.factor)
    n = p.norms.float().unsqueeze(1)
    err = [hessian_error(n * p.unit_rot, n * (c * step), p.h_rot) for c in (codes, rtn)]
    return codes if err[0] <= err[1] else rtn


def qat_step(bits: int, d: int) -> float:
    """Step whose uniform code of an N(0, 1/d) coordinate has about ``bits`` bits of entropy
    (``h - log2 step = bits`` with ``h = log2(sqrt(2 pi e / d))``); QAT's grid per width."""
    return math.sqrt(2.0 * math.pi * math.e / d) * 2.0 ** (-int(bits))


def round_trip(w: torch.Tensor, rot: torch.Tensor, step: float) -> torch.Tensor:
    """Round to nearest on the grid ``step * Z`` and decode, with the exporter's functions
    (QAT and the sensitivity probe)."""
    norms, unit = _row_norms(w.float())
    codes = torch.round((unit @ rot.T) / np.float32(step))
    return dequantize(norms, codes, step, rot)


def rtn_bits(p: Prepared, step: float) -> float:
    """Empirical entropy (bits) of round-to-nearest codes: the allocator's fast rate proxy."""
    return entropy.empirical_entropy_bits(torch.round(p.unit_rot / step).to(torch.int32).numpy())


def dequantize(norms: torch.Tensor, codes: torch.Tensor, step: float, rot: torch.Tensor) -> torch.Tensor:
    """``n * (step * codes) R`` (float32)."""
    return norms.float().unsqueeze(1) * ((codes.float() * np.float32(step)) @ rot)


def write(entry: dict, norms: torch.Tensor, codes: torch.Tensor, step: float, writer) -> None:
    """Segments of one turbo-rd tensor: fp16 norms and the range-coded integers."""
    entry["step"] = float(np.float32(step))
    entry["segments"]["norms"] = writer.add("norms", norms.numpy().astype("<f2").tobytes())
    entry["segments"]["idx"] = writer.add("ec", entropy.encode_codes(codes.numpy().astype(np.int64)))


def read(entry: dict, reader, qcfg) -> torch.Tensor:
    """Decode one turbo-rd tensor (float32 ``[rows, d]``)."""
    rows = int(entry["shape"][0])
    d = int(np.prod(entry["shape"])) // max(rows, 1)
    norms = np.frombuffer(reader.segment(entry["segments"]["norms"]), dtype="<f2")
    codes = entropy.decode_codes(reader.segment(entry["segments"]["idx"]), rows * d)
    if norms.size != rows or codes.size != rows * d:
        raise ArtifactError(f"tensor {entry['name']}: turbo-rd segments do not match shape {entry['shape']}")
    step = float(entry["step"])
    if not 0 < step <= np.finfo(np.float32).max:  # NaN fails too
        raise ArtifactError(f"tensor {entry['name']}: step {step!r} is not a positive float32")
    if not np.isfinite(norms).all() or (norms < 0).any():
        raise ArtifactError(f"tensor {entry['name']}: norms hold NaN, inf or a negative value")
    codes_t = torch.from_numpy(codes.astype(np.float32).reshape(rows, d))
    return dequantize(torch.from_numpy(norms.copy()), codes_t, step, rotation_of(qcfg, d))
