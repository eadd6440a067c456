"""GPTQ, Hessian collection and LQER against naive references."""

import pytest
import torch

from pgolf.quant.calibrate.gptq import IntGrid, LevelGrid, gptq, hessian_error
from pgolf.quant.calibrate.lqer import dequantize_groups, lqer_delta, lqer_factors, quantize_groups


def _layer(rows=48, d=64, n=512, seed=0):
    """A least-squares layer with correlated inputs (as real activations are)."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g) / d**0.5 + torch.eye(d)
    x = torch.randn(n, d, generator=g) @ mix
    w = torch.randn(rows, d, generator=g) * 0.05
    return w, (x.T @ x).double()


@pytest.mark.parametrize("act_order", [True, False])
def test_gptq_beats_round_to_nearest_on_hessian_error(act_order):
    w, h = _layer()
    scale = (w.abs().amax(dim=1) / 7).to(torch.float16)
    grid = IntGrid(7)
    rtn = grid.decode(gptq(w, None, scale, grid)) * scale.float()[:, None]
    q = grid.decode(gptq(w, h, scale, grid, damp=0.01, block=16, act_order=act_order)) * scale.float()[:, None]
    assert hessian_error(w, q, h) < 0.8 * hessian_error(w, rtn, h)
    codes = gptq(w, h, scale, grid)
    assert codes.abs().max() <= 7 and torch.equal(codes, codes.round())


def test_gptq_identity_hessian_is_round_to_nearest():
    w, _ = _layer()
    scale = torch.full((w.shape[0],), 0.01, dtype=torch.float16)
    h = torch.eye(w.shape[1], dtype=torch.float64)
    assert torch.equal(gptq(w, h, scale, IntGrid(None), damp=0.0), gptq(w, None, scale, IntGrid(None)))


def test_gptq_level_grid_uses_codebook_indices():
    w, h = _layer(rows=8, d=32)
    levels = torch.tensor([-1.5, -0.5, 0.5, 1.5])
    codes = gptq(w, h, torch.full((8,), 0.05), LevelGrid(levels))
    assert codes.min() >= 0 and codes.max() <= 3


def _small_model():
    """(config, GPT) of a 2-layer width-32 tiny model without BigramHash or value embeddings, seed 0."""
    from pgolf.model.gpt import GPT
    from pgolf.presets import get_preset

    cfg = get_preset("tiny")
    cfg.model.num_layers, cfg.model.model_dim, cfg.model.num_heads, cfg.model.num_kv_heads = 2, 32, 2, 1
    cfg.model.bigram_buckets = cfg.model.value_embed_dim = 0
    torch.manual_seed(0)
    model = GPT(cfg.model)
    return cfg, model


def test_hessian_collection_matches_manual_sum():
    from pgolf.quant.calibrate.hessian import collect_hessians

    cfg, model = _small_model()
    batches = [torch.randint(0, cfg.model.vocab_size, (2, 16)) for _ in range(3)]
    hs, seconds = collect_hessians(model, batches)
    seen = []
    hook = model.blocks[1].mlp.down.register_forward_hook(lambda m, i, o: seen.append(i[0].reshape(-1, i[0].shape[-1])))
    with torch.no_grad():
        hidden = [model.hidden(b[:, :-1]) for b in batches]
    hook.remove()
    x = torch.cat(seen).double()
    assert torch.allclose(hs["blocks.1.mlp.down.weight"], x.T @ x, rtol=1e-6, atol=1e-6)
    xh = torch.cat([t.reshape(-1, t.shape[-1]) for t in hidden]).double()
    assert torch.allclose(hs["tok_emb.weight"], xh.T @ xh, rtol=1e-6, atol=1e-6)
    assert seconds >= 0 and "blocks.0.attn.q.weight" in hs


def test_lqer_lowers_the_error_it_corrects():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(128, 96, generator=g)
    w_hat = torch.round(w * 2) / 2 + 0.3 * torch.randn(128, 3, generator=g) @ torch.randn(3, 96, generator=g)
    fac = lqer_factors(w - w_hat, rank=4, bits_a=2, bits_b=4, group=64)
    fixed = w_hat + lqer_delta(fac, 64)
    assert ((w - fixed) ** 2).sum() < 0.5 * ((w - w_hat) ** 2).sum()
    assert fac["a"][0].max() <= 3 and fac["b"][0].max() <= 15


def test_group_quantization_roundtrip_bound():
    x = torch.linspace(-1, 3, 200)
    q, lo, step = quantize_groups(x, 4, 64)
    y = dequantize_groups(q, lo, step, 64)
    assert y.shape == x.shape and (y - x).abs().max() <= 0.5 * float(step.astype("f4").max()) + 2e-3


def test_probe_sensitivity_is_positive_and_leaves_the_model_unchanged():
    from pgolf.quant.calibrate.sensitivity import probe_sensitivity

    cfg, model = _small_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sens = probe_sensitivity(model, torch.randint(0, cfg.model.vocab_size, (4, 33)), cfg.quant)
    assert set(sens) == {n for n, p in model.named_parameters() if p.dim() == 2}
    assert all(v > 0 and v < float("inf") for v in sens.values())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
