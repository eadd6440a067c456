"""Tests of pgolf.model: parameter layout and count, shapes, causality, feature toggles,
attention paths (GQA vs explicit repeat on CPU; FlashAttention-3 vs SDPA on CUDA)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from pgolf.config import ModelConfig
from pgolf.model.attention import causal_attention, flash_attn_func, sdpa_attention, xsa
from pgolf.model.gpt import GPT, ROLES, count_params
from pgolf.presets import get_preset


def small_cfg(**kw) -> ModelConfig:
    base = dict(vocab_size=64, num_layers=4, model_dim=48, num_heads=4, num_kv_heads=2, mlp_mult=2.0,
                rope_dims=4, bigram_buckets=32, bigram_dim=8, value_embed_dim=8, value_embed_layers=(2, 3),
                xsa_last_n=2)
    base.update(kw)
    return ModelConfig(**base)


def randomize(model: GPT, seed: int = 0) -> GPT:
    """Give every parameter random values so zero-init branches are exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


def test_seed_param_count_and_names(monkeypatch):
    monkeypatch.setattr(GPT, "reset_parameters", lambda self: None)  # layout only; init is tested below
    model = GPT(get_preset("seed").model)
    assert count_params(model) == 44_258_604
    names = dict(model.named_parameters())
    for n in ["tok_emb.weight", "bigram.table.weight", "bigram.proj.weight", "bigram.scale", "smear.gate",
              "value_embed.table.weight", "value_embed.proj.weight", "value_embed.scale", "skip_weights",
              "blocks.0.attn.q.weight", "blocks.0.attn.k.weight", "blocks.0.attn.v.weight",
              "blocks.0.attn.out.weight", "blocks.0.attn.q_gain", "blocks.0.mlp.up.weight",
              "blocks.0.mlp.down.weight", "blocks.0.attn_scale", "blocks.0.mlp_scale", "blocks.0.resid_mix",
              "blocks.11.ve_scale", "blocks.12.ve_scale"]:
        assert n in names, n
    assert "blocks.10.ve_scale" not in names
    assert tuple(names["skip_weights"].shape) == (6, 576)
    assert tuple(names["blocks.3.resid_mix"].shape) == (2, 576)
    roles = model.param_roles()
    assert set(roles) == set(names) and set(roles.values()) <= set(ROLES)
    assert roles["tok_emb.weight"] == roles["bigram.table.weight"] == "embed"
    assert roles["bigram.proj.weight"] == "proj"  # 3 bits, as the seed stores it
    assert roles["value_embed.table.weight"] == "embed" and roles["value_embed.proj.weight"] == "proj"
    assert roles["blocks.5.attn.k.weight"] == "attn" and roles["blocks.5.mlp.up.weight"] == "mlp_up"
    assert roles["blocks.5.mlp.down.weight"] == "mlp_down" and roles["blocks.5.attn.q_gain"] == "control"
    assert all(roles[n] == "control" for n, p in names.items() if p.ndim <= 1)


def test_init_scheme():
    model = GPT(small_cfg(model_dim=64, num_heads=4, num_kv_heads=2))
    b = model.blocks[0]
    assert torch.all(b.attn.out.weight == 0) and torch.all(b.mlp.down.weight == 0)
    assert torch.all(model.bigram.table.weight == 0)
    q = b.attn.q.weight
    assert torch.allclose(q @ q.T, torch.eye(q.size(0)), atol=1e-5)  # orthogonal
    assert abs(model.tok_emb.weight.std().item() - 0.005) < 0.001
    assert torch.allclose(b.attn.q_gain, torch.full((4,), 1.5))


def test_shapes_and_loss_matches_logits():
    model = randomize(GPT(small_cfg()))
    idx = torch.randint(0, 64, (3, 17))
    tgt = torch.randint(0, 64, (3, 17))
    logits = model.forward_logits(idx)
    assert logits.shape == (3, 17, 64) and logits.dtype == torch.float32
    assert logits.abs().max() <= 30.0
    loss = model(idx, tgt)
    assert loss.dim() == 0 and loss.dtype == torch.float32
    assert torch.allclose(loss, F.cross_entropy(logits.reshape(-1, 64), tgt.reshape(-1)), atol=1e-6)


def test_causality():
    model = randomize(GPT(small_cfg()), seed=1)
    idx = torch.randint(0, 64, (2, 24))
    changed = idx.clone()
    changed[:, 12:] = torch.randint(0, 64, (2, 12))
    a, b = model.forward_logits(idx), model.forward_logits(changed)
    assert torch.allclose(a[:, :12], b[:, :12], atol=1e-6)
    assert not torch.allclose(a[:, 12:], b[:, 12:])


TOGGLES = [
    dict(bigram_buckets=0), dict(smear_gate=False), dict(unet_skips=False), dict(resid_mix=False),
    dict(ln_scale=False), dict(num_kv_heads=4), dict(qk_norm=False), dict(rope_dims=0), dict(q_gain_init=0.0),
    dict(xsa_last_n=0), dict(value_embed_dim=0), dict(mlp_activation="relu2"), dict(mlp_activation="gelu"),
    dict(tie_embeddings=False), dict(logit_softcap=0.0), dict(ortho_init=False), dict(num_layers=5),
]


@pytest.mark.parametrize("kw", TOGGLES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_feature_toggles_run(kw):
    cfg = small_cfg(**kw)
    model = randomize(GPT(cfg))
    idx = torch.randint(0, 64, (2, 9))
    loss = model(idx, idx)
    loss.backward()
    assert torch.isfinite(loss)
    full = count_params(GPT(small_cfg()))
    if kw in (dict(bigram_buckets=0), dict(value_embed_dim=0), dict(num_kv_heads=4), dict(tie_embeddings=False),
              dict(unet_skips=False), dict(resid_mix=False), dict(q_gain_init=0.0), dict(num_layers=5)):
        assert count_params(model) != full


def test_bigram_hash_index():
    model = GPT(small_cfg(bigram_buckets=32))
    idx = torch.tensor([[5, 7, 1000 % 64, 3]])
    h = model.bigram.hash(idx)
    expect = [31] + [((36313 * c) ^ (27191 * p)) % 31 for p, c in zip(idx[0, :-1].tolist(), idx[0, 1:].tolist())]
    assert h[0].tolist() == expect


def test_bigram_and_value_embed_receive_gradients_at_init():
    model = GPT(small_cfg())
    idx = torch.randint(0, 64, (2, 9))
    model(idx, idx).backward()
    assert model.bigram.table.weight.grad.abs().sum() > 0  # not a dead zero*zero product
    assert model.blocks[0].attn.out.weight.grad.abs().sum() > 0


def test_qat_hook_used_by_linear_and_tied_head():
    model = randomize(GPT(small_cfg()))
    idx = torch.randint(0, 64, (1, 8))
    base = model.forward_logits(idx)
    model.tok_emb.qat = lambda w: torch.zeros_like(w)
    assert torch.all(model.forward_logits(idx) == 0)  # tied head uses the hooked weight
    model.tok_emb.qat = None
    model.blocks[0].mlp.up.qat = lambda w: w * 0
    assert not torch.allclose(model.forward_logits(idx), base)


def test_bf16_autocast_close_to_fp32():
    model = GPT(small_cfg())
    with torch.no_grad():
        for blk in model.blocks:  # non-zero outputs so attention and MLP matter
            blk.attn.out.weight.normal_(std=0.05)
            blk.mlp.down.weight.normal_(std=0.05)
    idx = torch.randint(0, 64, (2, 16))
    ref = model.forward_logits(idx)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model.forward_logits(idx)
        loss = model(idx, idx)
    assert low.dtype == torch.float32 and loss.dtype == torch.float32
    assert (low - ref).abs().max().item() < 0.05 * max(1.0, ref.abs().max().item())


def test_gqa_matches_explicit_repeat():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 11, 8, 16, generator=g)
    k = torch.randn(2, 11, 2, 16, generator=g)
    v = torch.randn(2, 11, 2, 16, generator=g)
    native = sdpa_attention(q, k, v, native_gqa=True)
    repeat = sdpa_attention(q, k, v, native_gqa=False)
    kr, vr = (t.repeat_interleave(4, dim=2).transpose(1, 2) for t in (k, v))
    scores = (q.transpose(1, 2) @ kr.transpose(-1, -2)) / 4.0
    scores = scores.masked_fill(torch.triu(torch.ones(11, 11, dtype=torch.bool), 1), float("-inf"))
    explicit = (scores.softmax(-1) @ vr).transpose(1, 2)
    assert torch.allclose(native, explicit, atol=1e-5)
    assert torch.allclose(repeat, explicit, atol=1e-5)
    assert torch.allclose(causal_attention(q, k, v), explicit, atol=1e-5)


def test_xsa_removes_value_direction():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(2, 5, 4, 8, generator=g)
    v = torch.randn(2, 5, 2, 8, generator=g)
    out = xsa(y, v)
    vn = F.normalize(v, dim=-1).repeat_interleave(2, dim=2)
    assert torch.allclose((out * vn).sum(-1), torch.zeros(2, 5, 4), atol=1e-5)


@pytest.mark.cuda
@pytest.mark.parametrize("head_dim", [64, 72])  # 72: the seed's head dimension
def test_flash_attention_matches_sdpa(head_dim):
    fa3 = flash_attn_func()
    if fa3 is None:
        pytest.skip("FlashAttention-3 (flash_attn_interface) not importable")
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(2, 256, 8, head_dim, device="cuda", dtype=torch.bfloat16, generator=g)
    k = torch.randn(2, 256, 4, head_dim, device="cuda", dtype=torch.bfloat16, generator=g)
    v = torch.randn(2, 256, 4, head_dim, device="cuda", dtype=torch.bfloat16, generator=g)
    a = causal_attention(q, k, v, fa3=fa3).float()
    b = sdpa_attention(q, k, v).float()
    assert (a - b).abs().max().item() < 4e-2  # a few bf16 ulps of outputs of size ~1-3
    assert (a - b).abs().mean().item() < 2e-3


@pytest.mark.cuda
def test_model_flash_vs_sdpa_logits():
    if flash_attn_func() is None:
        pytest.skip("FlashAttention-3 (flash_attn_interface) not importable")
    cfg = dataclasses.replace(get_preset("tiny").model, use_flash_attn=True)
    torch.manual_seed(0)
    fa = randomize(GPT(cfg)).cuda()
    sd = GPT(dataclasses.replace(cfg, use_flash_attn=False)).cuda()
    sd.load_state_dict(fa.state_dict())
    idx = torch.randint(0, cfg.vocab_size, (2, 128), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        a, b = fa.forward_logits(idx), sd.forward_logits(idx)
    assert (a - b).abs().max().item() <= 0.05 * a.abs().max().item()
    tgt = torch.randint(0, cfg.vocab_size, (2, 128), device="cuda")
    la = torch.nn.functional.cross_entropy(a.flatten(0, 1), tgt.flatten())
    lb = torch.nn.functional.cross_entropy(b.flatten(0, 1), tgt.flatten())
    assert abs(la.item() - lb.item()) <= 0.01 * abs(lb.item())


@pytest.mark.slow
def test_compiles_with_fullgraph():
    model = randomize(GPT(small_cfg()))
    idx = torch.randint(0, 64, (2, 16))
    compiled = torch.compile(model, fullgraph=True)
    loss = compiled(idx, idx)
    loss.backward()
    assert torch.allclose(loss, model(idx, idx), atol=1e-5)
    model.blocks[0].mlp.up.qat = lambda w: w * 0.5  # the QAT hook swaps in without a graph break
    assert torch.isfinite(compiled(idx, idx))
