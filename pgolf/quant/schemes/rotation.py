"""Seeded random rotations, regenerated from ``(seed, d)`` instead of being stored.

* ``"haar"``: a Haar-random orthogonal matrix, the Q of a QR factorization of a
  Gaussian matrix with the sign fix ``Q <- Q * sign(diag(R))``;
* ``"hadamard"``: a randomized Hadamard transform ``(H_{2^k}/sqrt(2^k) (x) Q_m) * D``
  for ``d = 2^k * m`` (``Q_m`` a Haar matrix of the odd part, ``D`` random signs); a
  plain randomized Hadamard when ``d`` is a power of two. Needs an even ``d``.

The random numbers come from NumPy's PCG64 raw 64-bit stream (a fixed algorithm,
seeded through ``SeedSequence([seed, d, stream])``) turned into Gaussians by our own
Box-Muller in float64, so the matrix depends only on ``(kind, seed, d)``, not on the
machine, torch version or device; QR runs in float64 (LAPACK), leaving differences
across machines at the 1e-15 level. :func:`qjl_matrix` gives the Gaussian sketch of the
TurboQuant "prod" variant from the same stream machinery. Example::

    R = rotation_matrix("haar", seed=0, d=576)      # float64, R @ R.T == I
    Rt = rotation_tensor("haar", 0, 576, "cuda")    # float32 torch copy, cached
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

ROTATIONS = ("haar", "hadamard")
_STREAM_ROTATION, _STREAM_SIGNS, _STREAM_QJL = 0, 1, 2


def gaussian_stream(seed: int, d: int, stream: int, n: int) -> np.ndarray:
    """``n`` float64 standard normals determined only by ``(seed, d, stream)``."""
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(d), int(stream)])
    raw = np.random.PCG64(ss).random_raw(2 * ((n + 1) // 2))
    u = ((raw >> np.uint64(11)).astype(np.float64) + 0.5) * (2.0**-53)  # in (0, 1)
    u1, u2 = u[0::2], u[1::2]
    r = np.sqrt(-2.0 * np.log(u1))
    z = np.empty(2 * len(u1))
    z[0::2] = r * np.cos(2.0 * np.pi * u2)
    z[1::2] = r * np.sin(2.0 * np.pi * u2)
    return z[:n]


def _haar(seed: int, d: int, stream: int) -> np.ndarray:
    import torch

    g = torch.from_numpy(gaussian_stream(seed, d, stream, d * d).reshape(d, d))
    q, r = (t.numpy() for t in torch.linalg.qr(g))  # float64 Householder QR (LAPACK)
    s = np.sign(np.diag(r))
    s[s == 0] = 1.0
    return q * s[None, :]


def _hadamard(n: int) -> np.ndarray:
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


def _randomized_hadamard(seed: int, d: int) -> np.ndarray:
    if d % 2:
        raise ValueError(f"hadamard rotation needs an even dimension, got d={d}")
    k = (d & -d)  # largest power of two dividing d
    m = d // k
    h = _hadamard(k) / np.sqrt(k)
    core = h if m == 1 else np.kron(h, _haar(seed, m, _STREAM_ROTATION))
    signs = np.sign(gaussian_stream(seed, d, _STREAM_SIGNS, d))
    signs[signs == 0] = 1.0
    return core * signs[None, :]


@lru_cache(maxsize=64)
def rotation_matrix(kind: str, seed: int, d: int) -> np.ndarray:
    """The ``d x d`` orthogonal matrix (float64, read-only) for ``(kind, seed, d)``."""
    if int(d) < 1:
        raise ValueError(f"rotation dimension must be >= 1, got {d}")
    if kind == "haar":
        r = _haar(int(seed), int(d), _STREAM_ROTATION)
    elif kind == "hadamard":
        r = _randomized_hadamard(int(seed), int(d))
    else:
        raise ValueError(f"unknown rotation {kind!r}; choose one of: {', '.join(ROTATIONS)}")
    r.setflags(write=False)
    return r


@lru_cache(maxsize=64)
def qjl_matrix(seed: int, d: int) -> np.ndarray:
    """The ``d x d`` i.i.d. N(0,1) sketch matrix S of the QJL residual code (read-only)."""
    s = gaussian_stream(int(seed), int(d), _STREAM_QJL, int(d) * int(d)).reshape(int(d), int(d))
    s.setflags(write=False)
    return s


_TENSOR_CACHE: dict = {}


def rotation_tensor(kind: str, seed: int, d: int, device=None):
    """float32 torch copy of :func:`rotation_matrix` on ``device`` (cached)."""
    return _cached_tensor(("rot", kind, int(seed), int(d)), lambda: rotation_matrix(kind, seed, d), device)


def qjl_tensor(seed: int, d: int, device=None):
    """float32 torch copy of :func:`qjl_matrix` on ``device`` (cached)."""
    return _cached_tensor(("qjl", int(seed), int(d)), lambda: qjl_matrix(seed, d), device)


def _cached_tensor(key: tuple, make, device):
    import torch

    dev = torch.device(device if device is not None else "cpu")
    full = key + (str(dev),)
    if full not in _TENSOR_CACHE:
        if len(_TENSOR_CACHE) > 32:
            _TENSOR_CACHE.clear()
        _TENSOR_CACHE[full] = torch.from_numpy(np.array(make(), dtype=np.float32)).to(dev)
    return _TENSOR_CACHE[full]
