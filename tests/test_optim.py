"""Muon (Newton-Schulz, scaling, Nesterov, weight decay), parameter routing, schedules, averaging."""

import math

import pytest
import torch

from pgolf.presets import get_preset
from pgolf.train import schedule
from pgolf.train.averaging import EMA, SWA
from pgolf.train.optim import NS_COEFFS, Muon, make_adamw, newton_schulz, split_params


def test_newton_schulz_matches_naive_quintic_and_orthogonalizes():
    torch.manual_seed(0)
    g = torch.randn(3, 24, 40, dtype=torch.float64)
    a, b, c = NS_COEFFS
    for i in range(3):  # naive reference, one matrix at a time (wide: no transpose)
        x = g[i] / (g[i].norm() + 1e-7)
        for _ in range(5):
            A = x @ x.T
            x = a * x + (b * A + c * A @ A) @ x
        assert torch.allclose(newton_schulz(g, 5)[i], x, atol=1e-12)
    tall = newton_schulz(g.mT, 5)  # tall input is handled by transposing
    assert torch.allclose(tall, newton_schulz(g, 5).mT, atol=1e-12)
    s = torch.linalg.svdvals(newton_schulz(g, 5))
    assert s.min() > 0.5 and s.max() < 1.3  # the quintic's band around 1


def test_muon_step_matches_hand_computation():
    torch.manual_seed(1)
    p = torch.nn.Parameter(torch.randn(12, 6))
    ref = p.detach().clone()
    muon = Muon([("w", p)], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.5)
    buf = torch.zeros(12, 6)
    for _ in range(3):
        g = torch.randn(12, 6)
        p.grad = g.clone()
        muon.step()
        buf = 0.9 * buf + g
        upd = newton_schulz((g + 0.9 * buf).unsqueeze(0), 5)[0] * math.sqrt(12 / 6)
        ref = ref * (1 - 0.1 * 0.5) - 0.1 * upd
        assert torch.allclose(p.detach(), ref, atol=1e-5)
    state = muon.state_dict()
    assert torch.allclose(state["momentum_buffers"]["w"], buf, atol=1e-6)
    other = Muon([("w", torch.nn.Parameter(torch.zeros(12, 6)))], lr=0.1, momentum=0.5)
    other.load_state_dict(state)
    assert torch.equal(other.groups[0].momentum[0], state["momentum_buffers"]["w"]) and other.momentum == 0.9


def test_grad_scale_is_applied_before_momentum():
    torch.manual_seed(2)
    p1, p2 = (torch.nn.Parameter(torch.ones(4, 4)) for _ in range(2))
    g = torch.randn(4, 4)
    m1, m2 = Muon([("w", p1)], 0.1, 0.9), Muon([("w", p2)], 0.1, 0.9)
    p1.grad, p2.grad = g.clone(), g * 0.25
    m1.step(0.25)
    m2.step()
    assert torch.allclose(m1.groups[0].momentum, m2.groups[0].momentum)


def _tiny_model():
    from pgolf.model.gpt import GPT

    cfg = get_preset("tiny")
    m = cfg.model
    m.num_layers, m.model_dim, m.num_heads, m.num_kv_heads, m.value_embed_layers = 2, 32, 2, 1, (1,)
    m.bigram_dim, m.value_embed_dim, m.rope_dims = 16, 16, 8
    return GPT(m), cfg


def test_tiny_keeps_the_v01_routing():
    """tiny keeps pgolf 0.1's groups (Muon also on the value-embedding projection)."""
    model, cfg = _tiny_model()
    groups, named = split_params(model, cfg.train)
    by = {g.name: g.params for g in groups}
    assert sorted(n for g in groups for n in g.params) == sorted(n for n, _ in model.named_parameters())
    assert by["token"] == ["tok_emb.weight"]
    assert "value_embed.proj.weight" in by["muon"] and "bigram.proj.weight" in by["scalar"]
    assert all(named[n].ndim == 2 for n in by["muon"])
    adam = make_adamw(groups, named, cfg.train)
    assert [g["lr"] for g in adam.param_groups] == [cfg.train.tied_embed_lr, cfg.train.scalar_lr]


def test_lr_schedule_by_iterations():
    t = get_preset("tiny").train
    t.iterations, t.warmdown_iters, t.max_wallclock_seconds = 100, 40, 0
    assert schedule.lr_scale(0, 0, t) == 1.0 and schedule.lr_scale(60, 0, t) == 1.0
    assert schedule.lr_scale(80, 0, t) == pytest.approx(0.5)
    assert schedule.lr_scale(100, 0, t) == 0.0
    assert schedule.should_stop(100, 0, t) and not schedule.should_stop(99, 0, t)


def test_wallclock_warmdown_reaches_zero_at_the_cap():
    """Simulate a capped run with a fake clock: steps take 0.7 s, then 1.3 s (slowdown)."""
    t = get_preset("tiny").train
    t.iterations, t.warmdown_iters, t.max_wallclock_seconds = 10**6, 50, 100.0
    clock, step, scales = 0.0, 0, []
    while not schedule.should_stop(step, clock, t):
        s = schedule.lr_scale(step, clock, t)
        scales.append((clock, s))
        clock += 0.7 if step < 60 else 1.3
        step += 1
    assert clock >= 100.0 and clock < 101.3  # stops at the first step boundary past the cap
    assert scales[0][1] == 1.0
    assert all(a[1] >= b[1] for a, b in zip(scales, scales[1:]))  # never increases
    assert scales[-1][1] < 0.05  # last step taken with an lr scale near 0
    assert schedule.lr_scale(step, 100.0, t) == 0.0  # exactly 0 at the cap
    start = next(c for c, s in scales if s < 1.0)
    assert 100.0 - start < 50 * 1.3 + 1.3  # the warm-down lasted about warmdown_iters steps


def test_momentum_warmup():
    t = get_preset("seed").train
    assert schedule.muon_momentum(0, t) == pytest.approx(0.92)
    assert schedule.muon_momentum(750, t) == pytest.approx(0.955)
    assert schedule.muon_momentum(1500, t) == 0.99 == schedule.muon_momentum(10**5, t)


def test_ema_and_swa():
    w = torch.zeros(3)
    ema, swa = EMA({"w": w}, decay=0.5), SWA({"w": w})
    for v in (1.0, 2.0, 3.0):
        w.fill_(v)
        ema.update({"w": w})
        swa.add({"w": w})
    assert torch.allclose(ema.averaged()["w"], torch.full((3,), 0.5 * (0.5 * 0.5 + 1) + 1.5))
    assert torch.allclose(swa.averaged()["w"], torch.full((3,), 2.0))
    e2, s2 = EMA({"w": torch.zeros(3)}, 0.9), SWA({"w": torch.zeros(3)})
    e2.load_state_dict(ema.state_dict())
    s2.load_state_dict(swa.state_dict())
    assert torch.equal(e2.averaged()["w"], ema.averaged()["w"]) and s2.count == 3


@pytest.mark.cuda
def test_newton_schulz_bf16_on_cuda_close_to_fp32():
    torch.manual_seed(3)
    g = torch.randn(4, 256, 96, device="cuda")
    ref = newton_schulz(g.double(), 5).float()
    out = newton_schulz(g.bfloat16(), 5).float()
    assert (out - ref).norm() / ref.norm() < 0.05


def test_wallclock_warmdown_fraction():
    t = get_preset("tiny").train
    t.iterations, t.max_wallclock_seconds, t.warmdown_frac = 10**6, 200.0, 0.25
    assert schedule.lr_scale(10, 100.0, t) == 1.0 and schedule.lr_scale(10, 150.0, t) == 1.0
    assert schedule.lr_scale(10, 175.0, t) == pytest.approx(0.5)
    assert schedule.lr_scale(10, 200.0, t) == 0.0 and schedule.should_stop(10, 200.0, t)
