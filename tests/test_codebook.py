"""Lloyd-Max codebooks: classical Gaussian MSEs, level counts, sphere and k-means variants."""

import numpy as np
import pytest

from pgolf.quant.schemes.codebook import (
    codebook_mse,
    decision_thresholds,
    gaussian_codebook,
    kmeans_codebook,
    sphere_codebook,
)

GAUSSIAN_MSE = {1: 0.3634, 2: 0.1175, 3: 0.03454, 4: 0.009497}


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_gaussian_lloyd_max_mse_matches_classical_values(bits):
    mse = codebook_mse(gaussian_codebook(bits), "gaussian")
    assert abs(mse - GAUSSIAN_MSE[bits]) / GAUSSIAN_MSE[bits] < 0.005


def test_gaussian_one_bit_is_the_analytic_optimum():
    # b=1: levels +-sqrt(2/pi), MSE 1 - 2/pi
    assert np.allclose(gaussian_codebook(1), [-np.sqrt(2 / np.pi), np.sqrt(2 / np.pi)], atol=1e-6)


@pytest.mark.parametrize("bits", range(1, 9))
def test_every_codebook_has_exactly_2_pow_b_distinct_sorted_levels(bits):
    rng = np.random.default_rng(bits)
    books = [gaussian_codebook(bits), sphere_codebook(bits, 576), sphere_codebook(bits, 64),
             kmeans_codebook(rng.standard_normal(20000), bits)]
    for levels in books:
        assert len(levels) == 2**bits
        assert len(np.unique(levels)) == 2**bits
        assert np.all(np.diff(levels) > 0)
        # and in float32, as the quantizers use them
        assert len(np.unique(levels.astype(np.float32))) == 2**bits


def test_mse_decreases_with_bits_and_beats_nothing_below_4_pow_minus_b():
    prev = 1.0
    for b in range(1, 9):
        mse = codebook_mse(gaussian_codebook(b), "gaussian")
        assert mse < prev and mse > 4.0**-b  # no quantizer beats 4^-b
        prev = mse


def test_sphere_codebook_approaches_scaled_gaussian_in_high_dimension():
    d = 4096
    sph = sphere_codebook(3, d) * np.sqrt(d)
    assert np.allclose(sph, gaussian_codebook(3), rtol=0.01, atol=0.01)
    assert abs(codebook_mse(sphere_codebook(3, d), "sphere", d) * d - GAUSSIAN_MSE[3]) / GAUSSIAN_MSE[3] < 0.01


def test_sphere_codebook_is_lloyd_max_optimal_for_the_sphere_density():
    # centroid condition checked on a Monte-Carlo sample of unit-vector coordinates
    d, bits = 16, 2
    rng = np.random.default_rng(0)
    v = rng.standard_normal((200000, d))
    x = (v / np.linalg.norm(v, axis=1, keepdims=True))[:, 0]
    levels = sphere_codebook(bits, d)
    idx = np.searchsorted(decision_thresholds(levels), x)
    means = np.array([x[idx == i].mean() for i in range(len(levels))])
    assert np.allclose(means, levels, atol=3e-3)
    assert np.all(np.abs(levels) <= 1.0)


def test_kmeans_codebook_fits_its_sample():
    rng = np.random.default_rng(1)
    sample = np.concatenate([rng.normal(-3, 0.1, 5000), rng.normal(3, 0.1, 5000)])
    levels = kmeans_codebook(sample, 1)
    assert np.allclose(levels, [-3, 3], atol=0.02)


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        gaussian_codebook(0)
    with pytest.raises(ValueError):
        gaussian_codebook(9)
    with pytest.raises(ValueError):
        sphere_codebook(2, 1)
    with pytest.raises(ValueError):
        kmeans_codebook(np.ones(100), 2)
