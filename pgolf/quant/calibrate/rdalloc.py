"""Rate allocation for ``turbo-rd``: one Lagrangian slope, a step per tensor, fitted to bytes.

With a uniform quantizer of step ``s`` and entropy coding, a tensor's loss increase is
about ``s^2 * a`` (``a``: :attr:`Prepared.weight`, measured by
:mod:`pgolf.quant.calibrate.sensitivity`) and its rate about ``numel * (h - log2 s)`` bits.
Minimizing the total at a total rate gives ``s_t = c * sqrt(numel_t / a_t)`` for one
constant ``c`` shared by all tensors, capped at :func:`max_step` (about ``MIN_BITS`` bits
per coordinate) because the ``s^2`` model fails as a tensor approaches zero bits, and
floored at :func:`min_step` (about ``MAX_BITS`` bits, and never more code values than the
entropy coder takes): a byte target above what the finest grid needs (a small model under
the default 16 MB target) gives the finest grid, which :func:`finest` reports.
:func:`fit_scale` finds ``c`` so that the round-to-nearest entropy proxy meets a bit
budget (bisection in ``log c``); :func:`newton_scale` corrects ``c`` from a measured
artifact size (one bit per element per halving of ``c``). Example::

    c = fit_scale(prepared, budget_bits)
    steps = steps_for(prepared, c)            # {name: step}
"""

from __future__ import annotations

import math

from pgolf.quant.format.entropy import MAX_SYMBOLS
from pgolf.quant.schemes.turbo_rd import rtn_bits

ZERO_STEP = 1.0  # a tensor without error weight (all zero) gets the coarsest step


MIN_BITS = 1.0  # no tensor gets a coarser step than ~1 bit of entropy per coordinate
MAX_BITS = 12.0  # nor a finer one than ~12 bits (beyond the fp16 row norms' precision)
CODER_STEP = 4.0 / MAX_SYMBOLS  # unit-row coordinates lie in [-1, 1]: <= MAX_SYMBOLS / 2 codes


def max_step(d: int) -> float:
    """Coarsest step allowed: the error model ``step^2 * a`` fails as a tensor nears 0 bits."""
    return math.sqrt(2.0 * math.pi * math.e / d) * 2.0 ** (-MIN_BITS)


def min_step(d: int) -> float:
    """Finest step allowed: about ``MAX_BITS`` bits per coordinate, and within the coder's alphabet."""
    return max(math.sqrt(2.0 * math.pi * math.e / d) * 2.0 ** (-MAX_BITS), CODER_STEP)


def _step(p, c: float) -> float:
    if p.weight <= 0:
        return ZERO_STEP
    d = p.unit_rot.shape[1]
    return min(max(c * math.sqrt(p.numel / p.weight), min_step(d)), max_step(d))


def steps_for(prepared: dict, c: float) -> dict[str, float]:
    """``{name: c * sqrt(numel / weight)}`` clamped to ``[min_step(d), max_step(d)]``."""
    return {n: _step(p, c) for n, p in prepared.items()}


def finest(prepared: dict, c: float) -> bool:
    """Whether every weighted tensor is at its finest step at ``c`` (more bytes cannot help)."""
    return all(_step(p, c) <= min_step(p.unit_rot.shape[1]) for p in prepared.values() if p.weight > 0)


def proxy_bits(prepared: dict, c: float) -> float:
    steps = steps_for(prepared, c)
    return sum(rtn_bits(p, steps[n]) for n, p in prepared.items())


def fit_scale(prepared: dict, budget_bits: float, iters: int = 30) -> float:
    """``c`` whose proxy rate is just under ``budget_bits`` (bisection on ``log c``)."""
    lo, hi = math.log(1e-7), math.log(1e3)  # small c: many bits; large c: few
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if proxy_bits(prepared, math.exp(mid)) > budget_bits:
            lo = mid
        else:
            hi = mid
    return math.exp(hi)


def newton_scale(c: float, measured_bytes: int, target_bytes: float, coded_numel: int) -> float:
    """``c`` moved so that ``measured_bytes`` becomes ``target_bytes`` (high-rate slope)."""
    return c * 2.0 ** (8.0 * (measured_bytes - target_bytes) / max(coded_numel, 1))
