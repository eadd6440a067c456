"""TurboQuant (Zandieh et al. 2025) per output row: pure, vectorized tensor functions.

For a weight ``W`` of shape ``[rows, d]`` (rows = output features), each row ``w`` is
stored as its norm ``||w||`` (fp16) and ``d`` codebook indices of ``b`` bits:

    y = R (w / ||w||)            R: seeded d x d rotation (pgolf.quant.schemes.rotation)
    idx = nearest level of y      levels: b-bit Lloyd-Max codebook of one coordinate
    w_hat = ||w|| * R^T levels[idx]

The "prod" variant spends ``b-1`` bits on the MSE code above and 1 bit per coordinate
on a QJL sign sketch of the residual ``r = y - levels[idx]`` (plus ``||r||`` in fp16):
``r_hat = sqrt(pi/2)/d * ||r|| * S^T sign(S r)`` with ``S`` a seeded Gaussian matrix,
an unbiased inner-product estimate. :func:`fake_quant` is the straight-through
estimator used in training (forward = dequantized weight, backward = identity). All
arithmetic is float32 on the weight's device. Example::

    levels = codebook_tensor(3, 576)                     # 8 levels, unit-vector scale
    rot = rotation_tensor("haar", 0, 576)
    norms, idx = quantize_mse(w, rot, levels)
    w_hat = dequantize_mse(norms, idx, rot, levels)
"""

from __future__ import annotations

import math

import numpy as np
import torch

from pgolf.quant.schemes.codebook import gaussian_codebook, sphere_codebook

CODEBOOKS = ("beta", "gaussian")
FP16_MAX = 65504.0


def codebook_levels(bits: int, d: int, kind: str = "beta") -> np.ndarray:
    """b-bit levels for one coordinate of a rotated unit row of dimension ``d``."""
    if kind == "beta":
        return np.asarray(sphere_codebook(bits, d))
    if kind == "gaussian":
        return np.asarray(gaussian_codebook(bits)) / math.sqrt(d)
    raise ValueError(f"unknown codebook {kind!r}; choose one of: {', '.join(CODEBOOKS)}")


def codebook_tensor(bits: int, d: int, kind: str = "beta", device=None) -> torch.Tensor:
    """:func:`codebook_levels` as a float32 tensor."""
    return torch.tensor(codebook_levels(bits, d, kind), dtype=torch.float32, device=device)


def thresholds_of(levels: torch.Tensor) -> torch.Tensor:
    """Decision thresholds (midpoints) of sorted float32 levels."""
    return 0.5 * (levels[1:] + levels[:-1])


def _row_norms(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp16 row norms, float32 unit rows); zero rows stay zero."""
    w = w.float()
    n = torch.linalg.vector_norm(w, dim=1, keepdim=True)
    unit = w / torch.where(n > 0, n, torch.ones_like(n))
    return n.squeeze(1).to(torch.float16), unit


def _check_2d(w: torch.Tensor) -> None:
    if w.dim() != 2:
        raise ValueError(f"TurboQuant expects a 2-D [rows, d] tensor, got shape {tuple(w.shape)}")
    if not torch.isfinite(w).all():
        raise ValueError("TurboQuant: weight contains NaN or inf")
    if torch.linalg.vector_norm(w.float(), dim=1).max() > FP16_MAX:
        raise ValueError(f"TurboQuant: a row norm exceeds the fp16 range ({FP16_MAX})")


def quantize_mse(w: torch.Tensor, rot: torch.Tensor, levels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode rows of ``w`` -> (fp16 norms ``[rows]``, int64 indices ``[rows, d]``)."""
    _check_2d(w)
    return encode_mse(w, rot, levels)


def encode_mse(w: torch.Tensor, rot: torch.Tensor, levels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`quantize_mse` without its input checks: the same arithmetic (QAT's per-step refresh)."""
    norms, unit = _row_norms(w)
    y = unit @ rot.T
    return norms, torch.bucketize(y, thresholds_of(levels))


def dequantize_mse(norms: torch.Tensor, idx: torch.Tensor, rot: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Decode ``||w|| * R^T levels[idx]`` for every row (float32)."""
    return norms.float().unsqueeze(1) * (levels[idx.long()] @ rot)


def quantize_prod(
    w: torch.Tensor, rot: torch.Tensor, levels: torch.Tensor, sketch: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """"prod" encode: (norms fp16, indices at b-1 bits, sign bits bool, residual norms fp16)."""
    _check_2d(w)
    norms, unit = _row_norms(w)
    y = unit @ rot.T
    idx = torch.bucketize(y, thresholds_of(levels))
    resid = y - levels[idx]
    signs = (resid @ sketch.T) >= 0
    rnorms = torch.linalg.vector_norm(resid, dim=1).to(torch.float16)
    return norms, idx, signs, rnorms


def dequantize_prod(
    norms: torch.Tensor, idx: torch.Tensor, signs: torch.Tensor, rnorms: torch.Tensor,
    rot: torch.Tensor, levels: torch.Tensor, sketch: torch.Tensor,
) -> torch.Tensor:
    """"prod" decode: ``||w|| R^T (levels[idx] + sqrt(pi/2)/d ||r|| S^T sign)``."""
    d = rot.shape[0]
    pm = signs.float() * 2.0 - 1.0
    r_hat = (math.sqrt(math.pi / 2.0) / d) * rnorms.float().unsqueeze(1) * (pm @ sketch)
    return norms.float().unsqueeze(1) * ((levels[idx.long()] + r_hat) @ rot)


def roundtrip_mse(w: torch.Tensor, rot: torch.Tensor, levels: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """quantize+dequantize in one go without checks (graph-friendly; used by QAT).

    ``thresholds`` may be padded with +inf so that a fixed-size ``levels`` table can
    hold a smaller codebook (indices then never reach the padding).
    """
    n = torch.linalg.vector_norm(w, dim=1, keepdim=True)
    unit = w / torch.where(n > 0, n, torch.ones_like(n))
    idx = torch.bucketize(unit @ rot.T, thresholds)
    return n.to(torch.float16).float() * (levels[idx] @ rot)


def roundtrip_prod(
    w: torch.Tensor, rot: torch.Tensor, levels: torch.Tensor, thresholds: torch.Tensor, sketch: torch.Tensor
) -> torch.Tensor:
    """Graph-friendly "prod" quantize+dequantize (see :func:`roundtrip_mse`)."""
    n = torch.linalg.vector_norm(w, dim=1, keepdim=True)
    y = (w / torch.where(n > 0, n, torch.ones_like(n))) @ rot.T
    c = levels[torch.bucketize(y, thresholds)]
    resid = y - c
    pm = torch.where(resid @ sketch.T >= 0, 1.0, -1.0)
    rn = torch.linalg.vector_norm(resid, dim=1, keepdim=True).to(torch.float16).float()
    r_hat = (math.sqrt(math.pi / 2.0) / rot.shape[0]) * rn * (pm @ sketch)
    return n.to(torch.float16).float() * ((c + r_hat) @ rot)


def straight_through(w: torch.Tensor, w_hat: torch.Tensor) -> torch.Tensor:
    """Forward value exactly ``w_hat``, gradient passed to ``w`` unchanged (STE).

    ``w - w.detach()`` is exactly zero, so the value is bit-identical to ``w_hat``.
    """
    return w_hat.to(w.dtype).detach() + (w - w.detach())


def fake_quant(w: torch.Tensor, rot: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """TurboQuant-mse fake quantization with the straight-through estimator."""
    w_hat = roundtrip_mse(w.float(), rot, levels, thresholds_of(levels))
    return straight_through(w, w_hat)
