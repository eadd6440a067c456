"""QAT: reaches every quantized weight, uses the quantizer's values, STE gradients,
progressive schedule by buffer writes, no recompiles under torch.compile(fullgraph=True)."""

import time

import pytest
import torch
import torch.nn.functional as F

from pgolf.presets import get_preset
from pgolf.quant.schemes import turbo
from pgolf.quant.calibrate.allocation import plan_state_dict
from pgolf.quant.schemes.qat import bits_at, fake_quant_modules, prepare_qat, qat_state, remove_qat, update_qat
from pgolf.quant.schemes.rotation import rotation_tensor


def _small_cfg():
    cfg = get_preset("tiny")
    m = cfg.model
    m.num_layers, m.model_dim, m.num_heads, m.num_kv_heads = 2, 64, 4, 2
    m.bigram_buckets, m.bigram_dim, m.value_embed_dim, m.value_embed_layers, m.xsa_last_n = 64, 16, 16, (1,), 1
    m.vocab_size = 128
    cfg.quant.fp16_max_numel = 1024  # so attention matrices (64x64) are quantized too
    return cfg


def _model(cfg):
    from pgolf.model.gpt import GPT

    torch.manual_seed(0)
    model = GPT(cfg.model)
    with torch.no_grad():  # non-zero everywhere so every matrix gets a gradient
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.05)
    return model


def test_prepare_hooks_every_quantized_weight():
    cfg = _small_cfg()
    model = _model(cfg)
    prepare_qat(model, cfg.quant)
    plans = plan_state_dict(dict(model.named_parameters()), model.param_roles(), cfg.quant)
    want = {p.name.rsplit(".", 1)[0] for p in plans if p.quantized}
    got = {name for name, _ in fake_quant_modules(model)}
    assert model._qat_unhooked == []
    assert want == got
    assert {"blocks.0.attn.q", "blocks.1.mlp.up", "blocks.1.mlp.down", "tok_emb"} <= got
    assert not any("qat" in k for k in model.state_dict())  # buffers are not persisted


def test_forward_uses_fake_quantized_weights_and_gradients_reach_them():
    cfg = _small_cfg()
    model = _model(cfg)
    prepare_qat(model, cfg.quant)
    update_qat(model, 0.05, cfg.quant)  # final phase: every tensor at its target bits
    lin = model.blocks[0].mlp.up
    assert qat_state(model)["blocks.0.mlp.up"] == cfg.quant.bits_mlp_up
    x = torch.randn(3, lin.in_features)
    d = lin.in_features
    rot, levels = rotation_tensor("haar", 0, d), turbo.codebook_tensor(cfg.quant.bits_mlp_up, d)
    w_hat = turbo.dequantize_mse(*turbo.quantize_mse(lin.weight.detach(), rot, levels), rot, levels)
    assert torch.equal(lin(x), F.linear(x, w_hat))
    assert not torch.equal(lin(x), F.linear(x, lin.weight))
    idx = torch.randint(0, cfg.model.vocab_size, (2, 16))
    model(idx, idx).backward()
    for name in ("blocks.0.attn.q", "blocks.0.attn.v", "blocks.1.attn.out", "blocks.0.mlp.up", "blocks.1.mlp.down", "tok_emb"):
        g = model.get_submodule(name).weight.grad
        assert g is not None and float(g.abs().sum()) > 0, name
    remove_qat(model)
    assert torch.equal(lin(x), F.linear(x, lin.weight))


def test_straight_through_gradient_equals_gradient_at_quantized_weight():
    cfg = _small_cfg()
    model = _model(cfg)
    prepare_qat(model, cfg.quant)
    update_qat(model, 0.2, cfg.quant)
    lin = model.blocks[0].attn.q
    x = torch.randn(5, lin.in_features)
    w_hat = lin.qat.quantized(lin.weight).detach().requires_grad_(True)
    F.linear(x, w_hat).square().sum().backward()
    lin(x).square().sum().backward()
    assert torch.allclose(lin.weight.grad, w_hat.grad)


def test_progressive_schedule_never_goes_below_target():
    q = get_preset("seed").quant
    assert bits_at(0.9, q, 2) is None and bits_at(0.51, q, 3) is None
    assert [bits_at(s, q, 2) for s in (0.5, 0.4, 0.3, 0.2, 0.15, 0.0)] == [4, 4, 3, 3, 2, 2]
    assert [bits_at(s, q, 3) for s in (0.4, 0.2, 0.1)] == [4, 3, 3]
    assert [bits_at(s, q, 4) for s in (0.4, 0.2, 0.1)] == [4, 4, 4]
    q.scheme = "int6"
    assert bits_at(0.9, q, 6) is None and bits_at(0.1, q, 6) == 6


@pytest.mark.parametrize("scheme", ["turbo", "turbo-prod", "int6"])
def test_compiled_fullgraph_switches_modes_without_recompiling(scheme):
    from torch._dynamo.testing import CompileCounterWithBackend

    from pgolf.model.layers import Linear

    cfg = _small_cfg()
    cfg.quant.scheme = scheme
    net = torch.nn.Sequential(Linear(48, 96, "mlp_up"), torch.nn.ReLU(), Linear(96, 48, "mlp_down"))
    net.param_roles = lambda: {"0.weight": "mlp_up", "2.weight": "mlp_down"}
    prepare_qat(net, cfg.quant)
    assert len(list(fake_quant_modules(net))) == 2
    counter = CompileCounterWithBackend("aot_eager")
    torch._dynamo.reset()
    compiled = torch.compile(net, backend=counter, fullgraph=True)
    x = torch.randn(4, 48)
    t0 = time.time()
    seen = set()
    for lr in (1.0, 0.45, 0.25, 0.1, 0.6, 0.05):
        update_qat(net, lr, cfg.quant)
        out = compiled(x)
        out.sum().backward()
        assert torch.equal(out, net(x)), lr
        seen.add(tuple(qat_state(net).values()))
    print(f"compile+6 steps ({scheme}, aot_eager): {time.time() - t0:.2f}s")
    assert counter.frame_count == 1  # one graph for every schedule state
    assert len(seen) >= (2 if scheme == "int6" else 4)


def test_training_picks_the_artifacts_indices_for_every_quantized_tensor():
    """Final QAT phase (every tensor at its own bits): the weight training sees is, bit for
    bit, the one the artifact decodes to, for every quantized tensor and each scheme."""
    from pgolf.quant.format.artifact import build_artifact, decode

    for scheme in ("turbo", "turbo-prod", "int6"):
        cfg = _small_cfg()
        cfg.quant.scheme = scheme
        model = _model(cfg)
        prepare_qat(model, cfg.quant)
        update_qat(model, 0.01, cfg.quant)
        blob, _, rows = build_artifact(dict(model.state_dict()), cfg, roles=model.param_roles())
        decoded, _ = decode(blob)
        hooked = dict(fake_quant_modules(model))
        quantized = [r["name"] for r in rows if r["kind"] in ("turbo", "turbo-prod", "int")]
        assert sorted(quantized) == sorted(f"{n}.weight" for n in hooked)
        for name, q in hooked.items():
            assert q.is_on and q.bit_modes[q.mode] == q.target_bits
            assert torch.equal(q.qweight, decoded[f"{name}.weight"]), (scheme, name)
        assert len(quantized) >= 8


def test_no_fake_quant_work_while_qat_is_off(monkeypatch):
    """Off: update_qat and the forward pass never quantize; on: once per update, not per forward."""
    from pgolf.quant.schemes import qat as qat_mod

    cfg = _small_cfg()
    model = _model(cfg)
    prepare_qat(model, cfg.quant)
    calls = []
    monkeypatch.setattr(turbo, "encode_mse", lambda *a, _f=turbo.encode_mse: calls.append(1) or _f(*a))
    idx = torch.randint(0, cfg.model.vocab_size, (2, 16))
    for _ in range(3):
        update_qat(model, 0.9, cfg.quant)  # lr scale above every threshold: off
        model(idx, idx).backward()
    assert calls == []
    n_hooked = len(list(qat_mod.fake_quant_modules(model)))
    update_qat(model, 0.05, cfg.quant)
    for _ in range(3):  # micro-batches of one optimizer step
        model(idx, idx).backward()
    assert len(calls) == n_hooked
    update_qat(model, 0.9, cfg.quant)
    model(idx, idx).backward()
    assert len(calls) == n_hooked and qat_state(model) == {n: None for n in qat_state(model)}
