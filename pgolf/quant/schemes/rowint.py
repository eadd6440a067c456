"""Per-row symmetric integer quantization (the int8 / int6 baselines), pure tensor functions.

Each row ``w`` of a ``[rows, d]`` weight gets one fp16 scale
``s = clip * max|w| / qmax`` with ``qmax = 2^(b-1) - 1`` (127 at 8 bits, 31 at 6 bits),
and integers ``q = clamp(round(w / s), -qmax, qmax)``; decode is ``q * s``. The scale is
rounded to fp16 *before* quantizing so that encode and decode agree exactly. ``clip`` in
(0, 1] trades clipping error on outliers for resolution elsewhere. Example::

    q, scales = quantize_rows(w, bits=6, clip=1.0)
    w_hat = dequantize_rows(q, scales)
"""

from __future__ import annotations

import torch


def qmax_of(bits: int) -> int:
    """Largest magnitude of a symmetric ``bits``-bit integer code."""
    if not 2 <= int(bits) <= 8:
        raise ValueError(f"row-int bits must be in 2..8, got {bits}")
    return (1 << (int(bits) - 1)) - 1


def row_scales(w: torch.Tensor, bits: int, clip: float = 1.0) -> torch.Tensor:
    """fp16 per-row scales ``clip * max|w| / qmax`` (zero rows get scale 0)."""
    if not 0.0 < clip <= 1.0:
        raise ValueError(f"int clip must be in (0, 1], got {clip}")
    amax = w.float().abs().amax(dim=1)
    return (clip * amax / qmax_of(bits)).to(torch.float16)


def quantize_rows(w: torch.Tensor, bits: int, clip: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode ``w [rows, d]`` -> (int8 codes in [-qmax, qmax], fp16 scales ``[rows]``)."""
    if w.dim() != 2:
        raise ValueError(f"row-int quantization expects a 2-D tensor, got shape {tuple(w.shape)}")
    if not torch.isfinite(w).all():
        raise ValueError("row-int quantization: weight contains NaN or inf")
    scales = row_scales(w, bits, clip)
    return _codes(w.float(), scales.float().unsqueeze(1), float(qmax_of(bits))), scales


def _codes(w: torch.Tensor, s: torch.Tensor, qmax) -> torch.Tensor:
    safe = torch.where(s > 0, s, torch.ones_like(s))
    return torch.clamp(torch.round(w / safe), -qmax, qmax).to(torch.int8)


def dequantize_rows(q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Decode ``q * scale`` per row (float32)."""
    return q.float() * scales.float().unsqueeze(1)


def roundtrip_rows(w: torch.Tensor, qmax: torch.Tensor, clip: float = 1.0) -> torch.Tensor:
    """Graph-friendly quantize+dequantize; ``qmax`` may be a tensor buffer (QAT)."""
    s = (clip * w.abs().amax(dim=1, keepdim=True) / qmax).to(torch.float16).float()
    safe = torch.where(s > 0, s, torch.ones_like(s))
    return torch.clamp(torch.round(w / safe), -qmax, qmax) * s


def fake_quant_rows(w: torch.Tensor, bits: int, clip: float = 1.0) -> torch.Tensor:
    """Row-int fake quantization with the straight-through estimator."""
    w_hat = roundtrip_rows(w.float(), torch.tensor(float(qmax_of(bits)), device=w.device), clip)
    return w_hat.to(w.dtype).detach() + (w - w.detach())
