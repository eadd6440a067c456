"""Small-sample statistics for multi-seed runs: mean/std and Welch's t-test, dependency-free.

The Student-t tail probability is computed from the regularized incomplete beta function
``I_x(a, b)``, evaluated by its continued fraction (modified Lentz method) with
``math.lgamma`` for the prefactor; no scipy. ``welch_test(a, b, delta=0.005)`` tests
whether the mean of ``a`` is below the mean of ``b`` by more than ``delta`` (the
challenge's rule: an improvement of at least 0.005 nats with p < 0.01)::

    from pgolf.pipeline.stats import welch_test, mean_std
    res = welch_test([1.10, 1.11, 1.09], [1.13, 1.12, 1.14], delta=0.005)
    res.t, res.df, res.p_one_sided, res.p_two_sided
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

_EPS = 1e-15
_TINY = 1e-300
_MAX_ITER = 500


def _beta_cf(a: float, b: float, x: float) -> float:
    """Continued fraction of I_x(a, b) (without prefactor), modified Lentz evaluation.

    Converges quickly for ``x < (a + 1) / (a + b + 2)``; callers use the symmetry
    ``I_x(a, b) = 1 - I_{1-x}(b, a)`` otherwise.
    """
    c = 1.0
    d = 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    f = d
    for m in range(1, _MAX_ITER + 1):
        # even step: d_{2m} = m (b - m) x / ((a + 2m - 1)(a + 2m))
        num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + num / c
        c = c if abs(c) > _TINY else _TINY
        f *= c * d
        # odd step: d_{2m+1} = -(a + m)(a + b + m) x / ((a + 2m)(a + 2m + 1))
        num = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + num / c
        c = c if abs(c) > _TINY else _TINY
        step = c * d
        f *= step
        if abs(step - 1.0) < _EPS:
            return f
    raise ArithmeticError(f"incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})")


def betainc_reg(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if not (a > 0 and b > 0):
        raise ValueError(f"betainc_reg needs a, b > 0, got a={a}, b={b}")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"betainc_reg needs 0 <= x <= 1, got x={x}")
    if x == 0.0 or x == 1.0:
        return x
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_cf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_cf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """Upper tail P(T > t) of Student's t with ``df`` degrees of freedom (df > 0, may be fractional)."""
    if not df > 0:
        raise ValueError(f"t distribution needs df > 0, got {df}")
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * betainc_reg(df / 2.0, 0.5, df / (df + t * t))  # P(T > |t|)
    return tail if t >= 0 else 1.0 - tail


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) of Student's t with ``df`` degrees of freedom."""
    return 1.0 - t_sf(t, df)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0.0 for a single value)."""
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("mean_std of an empty sequence")
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, 0.0
    var = sum((x - m) ** 2 for x in xs) / (len(xs) - 1)
    return m, math.sqrt(var)


@dataclass(frozen=True)
class WelchResult:
    """Welch's unequal-variance t-test of mean(a) - mean(b) against -delta.

    ``p_one_sided`` is P-value of H0: mean(b) - mean(a) <= delta (i.e. ``a`` does not
    improve on ``b`` by more than ``delta``); small means ``a`` is lower than ``b`` by
    more than ``delta``. ``p_two_sided`` tests plain equality of means (ignores delta).
    NaN fields mean the test is undefined (fewer than 2 values per side or zero variance).
    """

    mean_a: float
    mean_b: float
    diff: float  # mean_a - mean_b
    delta: float
    t: float
    df: float
    p_one_sided: float
    p_two_sided: float


def welch_test(a: Sequence[float], b: Sequence[float], delta: float = 0.0) -> WelchResult:
    """Welch's t-test comparing samples ``a`` (candidate) and ``b`` (baseline)."""
    ma, sa = mean_std(a)
    mb, sb = mean_std(b)
    na, nb = len(a), len(b)
    nan = float("nan")
    if na < 2 or nb < 2:
        return WelchResult(ma, mb, ma - mb, delta, nan, nan, nan, nan)
    va, vb = sa * sa / na, sb * sb / nb
    se2 = va + vb
    if se2 <= 0.0:
        return WelchResult(ma, mb, ma - mb, delta, nan, nan, nan, nan)
    se = math.sqrt(se2)
    df = se2 * se2 / (va * va / (na - 1) + vb * vb / (nb - 1))
    t_two = (ma - mb) / se
    p_two = min(1.0, 2.0 * t_sf(abs(t_two), df))
    # one-sided: H1 is mean_b - mean_a > delta  <=>  (ma - mb + delta) / se < 0
    t_one = (ma - mb + delta) / se
    p_one = t_cdf(t_one, df)
    return WelchResult(ma, mb, ma - mb, delta, t_one, df, p_one, p_two)
