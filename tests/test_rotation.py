"""Seeded rotations: orthogonal, regenerated identically from (seed, d), golden values."""

import numpy as np
import pytest

from pgolf.quant.schemes import rotation
from pgolf.quant.schemes.rotation import gaussian_stream, qjl_matrix, rotation_matrix, rotation_tensor


@pytest.mark.parametrize("kind,d", [("haar", 7), ("haar", 576), ("hadamard", 64), ("hadamard", 576), ("hadamard", 6)])
def test_rotations_are_orthogonal(kind, d):
    r = rotation_matrix(kind, 3, d)
    assert r.shape == (d, d)
    assert np.abs(r @ r.T - np.eye(d)).max() < 1e-12


def test_regenerated_identically_from_seed_and_d():
    a = np.array(rotation_matrix("haar", 5, 96))
    rotation_matrix.cache_clear()
    b = rotation_matrix("haar", 5, 96)
    assert np.array_equal(a, b)
    assert not np.allclose(a, rotation_matrix("haar", 6, 96))
    assert not np.allclose(a[:48, :48], rotation_matrix("haar", 5, 48))


def test_golden_values_pin_the_stream_across_machines():
    # PCG64 raw stream + own Box-Muller + float64 QR: these must not change.
    assert np.allclose(rotation_matrix("haar", 0, 4)[0],
                       [0.02427055968528569, 0.44847844367060286, -0.8839873635969325, 0.1297858485979931], atol=1e-12)
    assert np.allclose(rotation_matrix("haar", 7, 3)[1],
                       [-0.9905152829847239, -0.12538711526982016, -0.05619204123365884], atol=1e-12)


def test_haar_sign_fix_gives_uniform_first_column_statistics():
    # Without the sign fix, Q's diagonal is biased; with it, E[Q_ii] ~ 0.
    diag = np.array([np.diag(rotation_matrix("haar", s, 8)) for s in range(100)])
    assert abs(diag.mean()) < 0.08


def test_gaussian_stream_is_standard_normal():
    z = gaussian_stream(1, 10, 0, 200001)
    assert len(z) == 200001
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01


def test_hadamard_needs_even_dimension_and_unknown_kind_fails():
    with pytest.raises(ValueError, match="even"):
        rotation_matrix("hadamard", 0, 9)
    with pytest.raises(ValueError, match="unknown rotation"):
        rotation_matrix("givens", 0, 8)


def test_tensor_copies_match_float64_matrix():
    t = rotation_tensor("haar", 0, 32)
    assert t.dtype.is_floating_point and tuple(t.shape) == (32, 32)
    assert np.allclose(t.numpy(), rotation_matrix("haar", 0, 32), atol=1e-7)
    assert qjl_matrix(0, 32).shape == (32, 32)
    assert rotation._TENSOR_CACHE  # cached
