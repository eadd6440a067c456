"""Tests for pgolf.pipeline.stats: incomplete beta, Student-t tails, Welch's t-test."""

import math

import pytest

from pgolf.pipeline.stats import betainc_reg, mean_std, t_cdf, t_sf, welch_test


@pytest.mark.parametrize("a", [0.5, 1.0, 2.5, 7.0])
@pytest.mark.parametrize("x", [0.01, 0.2, 0.5, 0.8, 0.99])
def test_betainc_closed_forms(a, x):
    # I_x(a, 1) = x^a and I_x(1, b) = 1 - (1 - x)^b
    assert betainc_reg(a, 1.0, x) == pytest.approx(x**a, rel=1e-12, abs=1e-14)
    assert betainc_reg(1.0, a, x) == pytest.approx(1 - (1 - x) ** a, rel=1e-12, abs=1e-14)


def test_betainc_symmetry_and_half_half():
    for a, b, x in [(3.3, 0.5, 0.3), (0.5, 12.0, 0.7), (40.0, 0.5, 0.95)]:
        assert betainc_reg(a, b, x) == pytest.approx(1 - betainc_reg(b, a, 1 - x), abs=1e-12)
    # I_x(1/2, 1/2) = (2/pi) asin(sqrt(x))
    for x in (0.1, 0.4, 0.9):
        assert betainc_reg(0.5, 0.5, x) == pytest.approx(2 / math.pi * math.asin(math.sqrt(x)), abs=1e-12)


def test_t_cdf_closed_forms():
    for t in (-5.0, -1.3, 0.0, 0.7, 2.0, 30.0):
        assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)  # Cauchy
        assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(t * t + 2)), abs=1e-12)


@pytest.mark.parametrize(
    "t, df, p_two",
    [  # critical values from standard t tables
        (12.7062047, 1, 0.05),
        (63.6567412, 1, 0.01),
        (2.7764451, 4, 0.05),
        (2.2281389, 10, 0.05),
        (3.1692727, 10, 0.01),
        (2.0422725, 30, 0.05),
    ],
)
def test_t_table_critical_values(t, df, p_two):
    assert 2 * t_sf(t, df) == pytest.approx(p_two, rel=1e-6)


def test_t_sf_matches_numerical_integration_of_density():
    def density(u, v):
        c = math.exp(math.lgamma((v + 1) / 2) - math.lgamma(v / 2)) / math.sqrt(v * math.pi)
        return c * (1 + u * u / v) ** (-(v + 1) / 2)

    for v in (2.7, 5.0, 17.3):
        for t in (0.5, 1.9, 3.0):
            n, lo = 20000, 0.0  # Simpson on [0, t]; sf = 0.5 - integral
            h = (t - lo) / n
            s = density(lo, v) + density(t, v)
            s += sum((4 if i % 2 else 2) * density(lo + i * h, v) for i in range(1, n))
            assert t_sf(t, v) == pytest.approx(0.5 - s * h / 3, abs=1e-9)


def test_large_df_approaches_normal():
    assert 2 * t_sf(2.5758293, 1e7) == pytest.approx(0.01, rel=1e-5)


def test_mean_std():
    m, s = mean_std([1.0, 2.0, 3.0, 4.0])
    assert m == 2.5 and s == pytest.approx(math.sqrt(5 / 3))
    assert mean_std([7.0]) == (7.0, 0.0)


def test_welch_known_example():
    # Example 1 of the Welch's t-test Wikipedia article: t = -2.46, df ~ 25.0, p ~ 0.021
    a1 = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
    a2 = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]
    r = welch_test(a1, a2)
    assert r.t == pytest.approx(-2.46, abs=0.005)
    assert r.df == pytest.approx(25.0, abs=0.1)
    assert r.p_two_sided == pytest.approx(0.021, abs=0.0006)
    assert r.p_one_sided == pytest.approx(r.p_two_sided / 2, rel=1e-9)


def test_welch_delta_shifts_one_sided_test():
    base = [1.130, 1.132, 1.128]
    better = [1.120, 1.122, 1.118]  # 0.010 lower
    assert welch_test(better, base, delta=0.0).p_one_sided < 0.01
    # an improvement of 0.010 is not significantly more than 0.010
    assert welch_test(better, base, delta=0.010).p_one_sided == pytest.approx(0.5, abs=1e-9)
    assert welch_test(base, better, delta=0.005).p_one_sided > 0.99


def test_welch_undefined_cases_are_nan():
    assert math.isnan(welch_test([1.0], [2.0, 3.0]).p_one_sided)
    assert math.isnan(welch_test([1.0, 1.0], [2.0, 2.0]).p_two_sided)
