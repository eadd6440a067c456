"""Lloyd-Max scalar codebooks, computed by the code (never typed-in constants).

Three sources, each giving exactly ``2**b`` sorted, distinct levels for b = 1..8:

* :func:`gaussian_codebook` -- the unit Gaussian N(0, 1);
* :func:`sphere_codebook` -- one coordinate of a uniformly random unit vector in
  dimension ``d`` (density proportional to ``(1 - x^2)^((d-3)/2)`` on [-1, 1]); this is
  the exact distribution TurboQuant quantizes after a random rotation;
* :func:`kmeans_codebook` -- 1-D k-means (Lloyd) on an empirical sample.

Densities are discretized on a fine grid (midpoint rule) and the Lloyd iteration runs
on prefix sums, so each step costs O(levels * log(grid)); results are cached with
``functools.lru_cache``. :func:`codebook_mse` gives the expected squared error of a
codebook under the same discretized density (used by the tests against the classical
values 0.3634, 0.1175, 0.03454, 0.009497). Example::

    levels = sphere_codebook(3, 576)          # numpy float64 array of 8 levels
    thresholds = decision_thresholds(levels)  # 7 midpoints for nearest-level search
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

MAX_BITS = 8
_GRID = 1 << 18  # grid cells for the numerical densities


def _check_bits(bits: int) -> int:
    if not isinstance(bits, (int, np.integer)) or not 1 <= int(bits) <= MAX_BITS:
        raise ValueError(f"codebook bits must be an integer in 1..{MAX_BITS}, got {bits!r}")
    return int(bits)


def _gaussian_grid() -> tuple[np.ndarray, np.ndarray]:
    """Midpoints and probability masses of N(0,1) on [-10, 10]."""
    edges = np.linspace(-10.0, 10.0, _GRID + 1)
    x = 0.5 * (edges[1:] + edges[:-1])
    w = np.exp(-0.5 * x * x)
    return x, w / w.sum()


def _sphere_grid(d: int) -> tuple[np.ndarray, np.ndarray]:
    """Midpoints and masses of one coordinate of a uniform unit vector in R^d."""
    half = min(1.0, 14.0 / np.sqrt(d))  # beyond 14 sigma the mass is < 1e-40
    edges = np.linspace(-half, half, _GRID + 1)
    x = 0.5 * (edges[1:] + edges[:-1])
    logw = 0.5 * (d - 3) * np.log1p(-x * x)
    w = np.exp(logw - logw.max())
    return x, w / w.sum()


def _lloyd(x: np.ndarray, w: np.ndarray, n_levels: int, iters: int, tol: float) -> np.ndarray:
    """Lloyd-Max on a discrete weighted sample ``(x sorted, w)``; returns sorted levels.

    Initialized at quantiles of the density^(1/3) (the high-rate optimal point density),
    then alternates midpoint thresholds and conditional means via prefix sums.
    """
    cw = np.concatenate([[0.0], np.cumsum(w)])
    cwx = np.concatenate([[0.0], np.cumsum(w * x)])
    dens = np.cumsum(np.cbrt(w))
    dens /= dens[-1]
    targets = (np.arange(n_levels) + 0.5) / n_levels
    levels = x[np.minimum(np.searchsorted(dens, targets), len(x) - 1)].astype(np.float64)
    levels = np.unique(levels)
    if len(levels) < n_levels:  # tiny samples: fall back to evenly spaced sample points
        levels = x[np.linspace(0, len(x) - 1, n_levels).round().astype(np.int64)]
    for _ in range(iters):
        thr = 0.5 * (levels[1:] + levels[:-1])
        cut = np.concatenate([[0], np.searchsorted(x, thr, side="right"), [len(x)]])
        mass = cw[cut[1:]] - cw[cut[:-1]]
        moment = cwx[cut[1:]] - cwx[cut[:-1]]
        new = np.where(mass > 0, moment / np.where(mass > 0, mass, 1.0), levels)
        shift = np.max(np.abs(new - levels))
        levels = new
        if shift <= tol:
            break
    return levels


def _finish(levels: np.ndarray, n_levels: int, what: str) -> np.ndarray:
    levels = np.sort(levels)
    if len(np.unique(levels)) != n_levels:
        raise ValueError(f"{what}: Lloyd-Max produced {len(np.unique(levels))} distinct levels, need {n_levels}")
    levels.setflags(write=False)
    return levels


@lru_cache(maxsize=None)
def gaussian_codebook(bits: int) -> np.ndarray:
    """Lloyd-Max levels (sorted, read-only float64) for N(0, 1) at ``bits`` bits."""
    bits = _check_bits(bits)
    x, w = _gaussian_grid()
    levels = _lloyd(x, w, 1 << bits, iters=20000, tol=1e-12)
    levels = 0.5 * (levels - levels[::-1])  # enforce exact symmetry
    return _finish(levels, 1 << bits, f"gaussian codebook b={bits}")


@lru_cache(maxsize=None)
def sphere_codebook(bits: int, d: int) -> np.ndarray:
    """Lloyd-Max levels for one coordinate of a uniform random unit vector in R^d."""
    bits = _check_bits(bits)
    if int(d) < 2:
        raise ValueError(f"sphere codebook needs dimension d >= 2, got {d}")
    x, w = _sphere_grid(int(d))
    levels = _lloyd(x, w, 1 << bits, iters=20000, tol=1e-14)
    levels = 0.5 * (levels - levels[::-1])
    return _finish(levels, 1 << bits, f"sphere codebook b={bits} d={d}")


def kmeans_codebook(sample: np.ndarray, bits: int, iters: int = 200) -> np.ndarray:
    """1-D k-means (Lloyd) levels fitted to an empirical ``sample`` (any shape)."""
    bits = _check_bits(bits)
    x = np.sort(np.asarray(sample, dtype=np.float64).ravel())
    if not np.all(np.isfinite(x)):
        raise ValueError("kmeans_codebook: sample contains NaN or inf")
    if len(np.unique(x)) < (1 << bits):
        raise ValueError(f"kmeans_codebook: sample has fewer than {1 << bits} distinct values")
    w = np.full(len(x), 1.0 / len(x))
    levels = _lloyd(x, w, 1 << bits, iters=iters, tol=0.0)
    return _finish(levels, 1 << bits, f"kmeans codebook b={bits}")


def decision_thresholds(levels: np.ndarray) -> np.ndarray:
    """Midpoints between consecutive sorted levels (nearest-level decision boundaries)."""
    levels = np.asarray(levels, dtype=np.float64)
    return 0.5 * (levels[1:] + levels[:-1])


def codebook_mse(levels: np.ndarray, source: str = "gaussian", d: int = 0) -> float:
    """Expected squared error of nearest-level quantization under ``source``'s density.

    ``source`` is ``"gaussian"`` (N(0,1)) or ``"sphere"`` (coordinate of a unit vector
    in R^d; multiply by d to compare with the Gaussian numbers).
    """
    x, w = _gaussian_grid() if source == "gaussian" else _sphere_grid(int(d))
    levels = np.asarray(levels, dtype=np.float64)
    idx = np.searchsorted(decision_thresholds(levels), x)
    return float(np.sum(w * (x - levels[idx]) ** 2))
