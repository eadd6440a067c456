"""GPTQ: Hessian-aware rounding of a weight matrix, column by column, with error feedback.

For a linear layer ``y = W x`` with input second moment ``H = sum x x^T`` (see
:mod:`pgolf.quant.calibrate.hessian`), GPTQ (Frantar et al. 2022) quantizes the columns of ``W``
one at a time and spreads each column's rounding error over the columns not yet
quantized through the Cholesky factor of ``H^-1``, which lowers the output error
``tr((W - Q) H (W - Q)^T)`` compared with rounding to nearest. Options: relative
damping (``damp * mean(diag H)`` added to the diagonal), block size (lazy batch
updates) and activation order (columns by decreasing ``diag H``).

The per-element quantizer is a :class:`Grid`: codes are ``grid.encode(w / scale)`` and
values ``grid.decode(codes) * scale`` with one ``scale`` per row, so the same core
serves per-row integers (``record``) and rotated-basis codebooks (``turbo-rd``).
Example::

    codes = gptq(W, H, scale, IntGrid(31))            # int64 [rows, d], original column order
    W_hat = IntGrid(31).decode(codes) * scale[:, None]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class IntGrid:
    """Symmetric integers ``-qmax..qmax`` (``qmax=None``: unbounded, for entropy coding)."""

    qmax: int | None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        q = torch.round(x)
        return q if self.qmax is None else q.clamp(-self.qmax, self.qmax)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return codes.to(torch.float32)


@dataclass(frozen=True)
class LevelGrid:
    """Nearest of sorted ``levels`` (a Lloyd-Max codebook); codes are level indices."""

    levels: torch.Tensor

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        thr = 0.5 * (self.levels[1:] + self.levels[:-1])
        return torch.bucketize(x.float(), thr).to(torch.float32)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.levels[codes.long()]


def hessian_error(w: torch.Tensor, w_hat: torch.Tensor, h: torch.Tensor) -> float:
    """``tr((W - W_hat) H (W - W_hat)^T)``: the summed squared output error."""
    e = (w - w_hat).double()
    return float(((e @ h.double()) * e).sum())


def inverse_cholesky(h: torch.Tensor, damp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(upper Cholesky factor of (H + damp*mean(diag H) I)^-1, dead-column mask)``."""
    h = h.double().clone()
    dead = torch.diagonal(h) <= 0
    h[dead, dead] = 1.0
    lam = damp * float(torch.diagonal(h).mean())
    h.diagonal().add_(lam)
    for _ in range(6):  # grow the damping if H is numerically indefinite
        l, info = torch.linalg.cholesky_ex(h)
        if int(info) == 0:
            break
        h.diagonal().add_(lam + 1e-8)
    else:
        raise ValueError("GPTQ: Hessian is not positive definite even after damping")
    hinv = torch.cholesky_inverse(l)
    return torch.linalg.cholesky(hinv, upper=True).float(), dead


def gptq(w: torch.Tensor, h: torch.Tensor | None, scale: torch.Tensor, grid, damp: float = 0.01,
         block: int = 128, act_order: bool = True, factor=None) -> torch.Tensor:
    """GPTQ codes (float32 holding integers, ``[rows, d]``, original column order).

    ``h`` None means round to nearest. ``factor`` is a precomputed
    ``(inverse_cholesky(h_perm, damp), perm)`` to reuse across calls with the same ``h``.
    """
    w = w.float()
    s = scale.float().unsqueeze(1)
    safe = torch.where(s > 0, s, torch.ones_like(s))
    if h is None and factor is None:
        return grid.encode(w / safe)
    (u, dead), perm = factor if factor is not None else hessian_factor(h, damp, act_order)
    work = w[:, perm].clone()
    work[:, dead] = 0.0
    codes = torch.empty_like(work)
    d = work.shape[1]
    for i1 in range(0, d, block):
        i2 = min(i1 + block, d)
        blk = work[:, i1:i2].clone()
        err = torch.empty_like(blk)
        ub = u[i1:i2, i1:i2]
        for j in range(i2 - i1):
            col = blk[:, j]
            c = grid.encode(col.unsqueeze(1) / safe).squeeze(1)
            codes[:, i1 + j] = c
            e = (col - grid.decode(c) * safe.squeeze(1)) / ub[j, j]
            blk[:, j:] -= e.unsqueeze(1) * ub[j, j:].unsqueeze(0)
            err[:, j] = e
        work[:, i2:] -= err @ u[i1:i2, i2:]
    out = torch.empty_like(codes)
    out[:, perm] = codes
    return out


def hessian_factor(h: torch.Tensor, damp: float = 0.01, act_order: bool = True):
    """``((U, dead), perm)`` for :func:`gptq`'s ``factor`` argument."""
    d = h.shape[0]
    perm = torch.argsort(torch.diagonal(h), descending=True) if act_order else torch.arange(d)
    return inverse_cholesky(h[perm][:, perm], damp), perm
