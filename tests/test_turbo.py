"""TurboQuant-mse / prod / fake-quant on random Gaussian rows."""

import math

import pytest
import torch

from pgolf.quant.schemes import turbo
from pgolf.quant.schemes.rotation import qjl_tensor, rotation_tensor

GAUSSIAN_MSE = {1: 0.3634, 2: 0.1175, 3: 0.03454, 4: 0.009497}


def _rows(n=512, d=576, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) * 0.02


@pytest.mark.parametrize("kind", ["beta", "gaussian"])
@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_turbo_mse_matches_lloyd_max_per_coordinate(bits, kind):
    w = _rows()
    rot = rotation_tensor("haar", 0, 576)
    levels = turbo.codebook_tensor(bits, 576, kind)
    norms, idx = turbo.quantize_mse(w, rot, levels)
    assert norms.dtype == torch.float16 and int(idx.max()) < 2**bits
    w_hat = turbo.dequantize_mse(norms, idx, rot, levels)
    rel = float(((w - w_hat) ** 2).sum() / (w**2).sum())
    assert abs(rel - GAUSSIAN_MSE[bits]) / GAUSSIAN_MSE[bits] < 0.05


def test_all_levels_are_used_and_hadamard_works_too():
    w = _rows(256)
    rot = rotation_tensor("hadamard", 1, 576)
    levels = turbo.codebook_tensor(3, 576)
    _, idx = turbo.quantize_mse(w, rot, levels)
    assert len(torch.unique(idx)) == 8
    w_hat = turbo.dequantize_mse(*turbo.quantize_mse(w, rot, levels), rot, levels)
    rel = float(((w - w_hat) ** 2).sum() / (w**2).sum())
    assert abs(rel - GAUSSIAN_MSE[3]) / GAUSSIAN_MSE[3] < 0.05


def test_zero_rows_decode_to_zero_and_scale_is_preserved():
    w = _rows(8, 64)
    w[3] = 0
    rot, levels = rotation_tensor("haar", 0, 64), turbo.codebook_tensor(4, 64)
    w_hat = turbo.dequantize_mse(*turbo.quantize_mse(w, rot, levels), rot, levels)
    assert torch.all(w_hat[3] == 0)
    w2 = turbo.dequantize_mse(*turbo.quantize_mse(w * 8, rot, levels), rot, levels)
    assert torch.allclose(w2, w_hat * 8, rtol=1e-3, atol=1e-6)


def test_prod_variant_is_unbiased_for_inner_products():
    d = 128
    w = _rows(4000, d, seed=1)
    x = torch.randn(d)
    rot, levels, sk = rotation_tensor("haar", 0, d), turbo.codebook_tensor(1, d), qjl_tensor(0, d)
    parts = turbo.quantize_prod(w, rot, levels, sk)
    assert parts[2].dtype == torch.bool
    w_hat = turbo.dequantize_prod(*parts, rot, levels, sk)
    err = (w_hat - w) @ x
    # mean error small relative to its spread (unbiased); the MSE-only code is biased (shrinks)
    assert abs(float(err.mean())) < 4 * float(err.std()) / math.sqrt(len(err))
    rel = float(((w - w_hat) ** 2).sum() / (w**2).sum())
    assert rel < 1.0


def test_roundtrip_and_fake_quant_match_encode_decode_and_pass_gradients():
    w = _rows(16, 64).requires_grad_(True)
    rot, levels = rotation_tensor("haar", 0, 64), turbo.codebook_tensor(2, 64)
    ref = turbo.dequantize_mse(*turbo.quantize_mse(w.detach(), rot, levels), rot, levels)
    out = turbo.fake_quant(w, rot, levels)
    assert torch.equal(out.detach(), ref)
    g = torch.randn_like(out)
    out.backward(g)
    assert torch.equal(w.grad, g)  # straight-through: identity gradient


def test_bad_input_raises():
    rot, levels = rotation_tensor("haar", 0, 4), turbo.codebook_tensor(2, 4)
    with pytest.raises(ValueError):
        turbo.quantize_mse(torch.ones(4), rot, levels)
    with pytest.raises(ValueError):
        turbo.quantize_mse(torch.full((2, 4), float("nan")), rot, levels)
    with pytest.raises(ValueError):
        turbo.codebook_tensor(2, 4, "laplace")
