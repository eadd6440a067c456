"""LQER: a low-rank correction of a tensor's quantization error, stored with quantized factors.

After quantization ``W ~ W_hat``, the error ``E = W - W_hat`` is approximated by its
rank-``r`` truncated SVD ``E ~ A B`` with ``A = U S^1/2`` ``[rows, r]`` and
``B = S^1/2 V^T`` ``[r, d]``. Each factor is stored asymmetrically quantized in groups
of ``group`` consecutive elements (``A`` column-wise, ``B`` row-wise): ``b``-bit codes
``round((x - min) / step)`` with ``step = (max - min) / (2^b - 1)`` and fp16 ``min``
and ``step`` per group. Decode adds ``A_hat B_hat`` to ``W_hat``. That is pgolf's packing
(the default). The record's packing (:func:`record_factors`, ``quant.lqer_packing=record``)
takes ``A = U S`` and ``B = V^T`` and stores both symmetrically, codes
``round(x / scale)`` in ``-qmax..qmax`` (``qmax = 2^(b-1) - 1``) with fp16
``scale = max|x| / qmax``: ``A`` at 2 bits with one scale for the whole factor, ``B`` at
4 bits with one scale per group of 64. Example::

    fac = lqer_factors(w - w_hat, rank=4, bits_a=2, bits_b=4, group=64)
    w_fixed = w_hat + lqer_delta(fac, 64)
    fac = record_factors(w - w_hat, rank=4)
    w_fixed = w_hat + record_delta(fac)
"""

from __future__ import annotations

import numpy as np
import torch


def quantize_groups(x: torch.Tensor, bits: int, group: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric group quantization of a 1-D tensor -> (uint8 codes, fp16 mins, fp16 steps)."""
    v = x.float().reshape(-1)
    n = v.numel()
    pad = (-n) % group
    g = torch.cat([v, v[-1:].expand(pad)]) if pad else v
    g = g.reshape(-1, group)
    lo = g.min(dim=1).values.to(torch.float16)
    step = ((g.max(dim=1).values - lo.float()) / ((1 << bits) - 1)).to(torch.float16)
    safe = torch.where(step.float() > 0, step.float(), torch.ones_like(step.float()))
    q = torch.clamp(torch.round((g - lo.float().unsqueeze(1)) / safe.unsqueeze(1)), 0, (1 << bits) - 1)
    return q.reshape(-1)[:n].to(torch.uint8).numpy(), lo.numpy(), step.numpy()


def dequantize_groups(codes: np.ndarray, lo: np.ndarray, step: np.ndarray, group: int) -> torch.Tensor:
    """Inverse of :func:`quantize_groups` (float32, length ``len(codes)``)."""
    n = len(codes)
    gi = np.arange(n) // group
    return torch.from_numpy(codes.astype(np.float32) * step.astype(np.float32)[gi] + lo.astype(np.float32)[gi])


def lqer_factors(err: torch.Tensor, rank: int, bits_a: int, bits_b: int, group: int) -> dict:
    """Quantized rank-``rank`` factors of ``err`` (a dict of numpy arrays and shapes)."""
    u, s, vh = torch.linalg.svd(err.double(), full_matrices=False)
    r = min(rank, s.numel())
    root = s[:r].sqrt()
    a = (u[:, :r] * root).float().T.contiguous()  # [r, rows]: each column of A is contiguous
    b = (root.unsqueeze(1) * vh[:r]).float().contiguous()  # [r, d]
    qa, loa, sa = quantize_groups(a, bits_a, group)
    qb, lob, sb = quantize_groups(b, bits_b, group)
    return {"rank": r, "rows": err.shape[0], "d": err.shape[1], "a": (qa, loa, sa), "b": (qb, lob, sb)}


def lqer_delta(fac: dict, group: int) -> torch.Tensor:
    """``A_hat @ B_hat`` of :func:`lqer_factors` output (float32 ``[rows, d]``)."""
    r, rows, d = fac["rank"], fac["rows"], fac["d"]
    a = dequantize_groups(*fac["a"], group).reshape(r, rows)
    b = dequantize_groups(*fac["b"], group).reshape(r, d)
    return a.T @ b


RECORD_BITS_A, RECORD_BITS_B, RECORD_GROUP_B = 2, 4, 64


def quantize_symmetric(x: torch.Tensor, bits: int, group: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric group quantization of a 1-D tensor -> (int8 codes in -qmax..qmax, fp16 scales)."""
    v = x.float().reshape(-1)
    n = v.numel()
    pad = (-n) % group
    g = torch.cat([v, v.new_zeros(pad)]).reshape(-1, group)
    qmax = (1 << (bits - 1)) - 1
    scale = (g.abs().max(dim=1).values / qmax).to(torch.float16)
    safe = torch.where(scale.float() > 0, scale.float(), torch.ones_like(scale.float()))
    q = torch.clamp(torch.round(g / safe.unsqueeze(1)), -qmax, qmax)
    return q.reshape(-1)[:n].to(torch.int8).numpy(), scale.numpy()


def dequantize_symmetric(codes: np.ndarray, scale: np.ndarray, group: int) -> torch.Tensor:
    """Inverse of :func:`quantize_symmetric` (float32, length ``len(codes)``)."""
    gi = np.arange(len(codes)) // group
    return torch.from_numpy(codes.astype(np.float32) * scale.astype(np.float32)[gi])


def record_factors(err: torch.Tensor, rank: int) -> dict:
    """The record's quantized rank-``rank`` factors of ``err``: ``A = U S`` (2 bits, one scale),
    ``B = V^T`` (4 bits, a scale per 64)."""
    u, s, vh = torch.linalg.svd(err.double(), full_matrices=False)
    r = min(rank, s.numel())
    a = (u[:, :r] * s[:r]).float().T.contiguous()  # [r, rows]
    b = vh[:r].float().contiguous()  # [r, d]
    return {"rank": r, "rows": err.shape[0], "d": err.shape[1],
            "a": quantize_symmetric(a, RECORD_BITS_A, max(a.numel(), 1)),
            "b": quantize_symmetric(b, RECORD_BITS_B, RECORD_GROUP_B)}


def record_delta(fac: dict) -> torch.Tensor:
    """``A_hat @ B_hat`` of :func:`record_factors` output (float32 ``[rows, d]``)."""
    r, rows, d = fac["rank"], fac["rows"], fac["d"]
    a = dequantize_symmetric(*fac["a"], max(r * rows, 1)).reshape(r, rows)
    b = dequantize_symmetric(*fac["b"], RECORD_GROUP_B).reshape(r, d)
    return a.T @ b
