"""The record's Muon variants: Polar Express per-iteration coefficients and row normalization."""

import math

import pytest
import torch

from pgolf.train.optim import POLAR_EXPRESS, Muon, newton_schulz, normalize_rows


def test_polar_express_matches_naive_per_iteration_coefficients():
    torch.manual_seed(0)
    g = torch.randn(2, 16, 48, dtype=torch.float64)
    for i in range(2):
        x = g[i] / (g[i].norm() * 1.02 + 1e-7)
        for a, b, c in POLAR_EXPRESS:  # a different (a, b, c) at every step
            A = x @ x.T
            x = a * x + (b * A + c * A @ A) @ x
        assert torch.allclose(newton_schulz(g, 5, schedule="polar-express")[i], x, atol=1e-10)
    assert not torch.allclose(newton_schulz(g, 5, schedule="polar-express"), newton_schulz(g, 5), atol=1e-3)
    s = torch.linalg.svdvals(newton_schulz(g, 5, schedule="polar-express"))
    assert s.min() > 0.6 and s.max() < 1.2
    with pytest.raises(ValueError):
        newton_schulz(g, 6, schedule="polar-express")


def test_row_normalized_muon_step_matches_hand_computation():
    torch.manual_seed(1)
    p = torch.nn.Parameter(torch.randn(8, 20))
    ref = p.detach().clone()
    muon = Muon([("w", p)], lr=0.05, momentum=0.9, nesterov=True, ns_schedule="polar-express", row_normalize=True)
    buf = torch.zeros(8, 20)
    for _ in range(2):
        g = torch.randn(8, 20) * torch.logspace(-2, 2, 8)[:, None]  # rows of very different scale
        p.grad = g.clone()
        muon.step()
        buf = 0.9 * buf + g
        u = g + 0.9 * buf
        u = u / u.norm(dim=-1, keepdim=True)
        upd = newton_schulz(u.unsqueeze(0), 5, schedule="polar-express")[0]
        ref = ref - 0.05 * upd * math.sqrt(max(1.0, 8 / 20))
        assert torch.allclose(p.detach(), ref, atol=1e-5)
    rows = normalize_rows(torch.tensor([[3.0, 4.0], [0.0, 0.0]]))
    assert torch.allclose(rows, torch.tensor([[0.6, 0.8], [0.0, 0.0]]))


def test_record_optimizer_table_routes_and_decays():
    from pgolf.model.gpt import GPT
    from pgolf.presets import get_preset
    from pgolf.train.groups import assign_groups

    cfg = get_preset("record")
    with torch.device("meta"):
        names = [n for n, _ in GPT(cfg.model).named_parameters()]
    groups = {g.name: g for g in assign_groups(names, cfg.train, tied=True)}
    assert set(groups) == {"muon", "token", "scalar"}
    assert (groups["muon"].lr, groups["muon"].weight_decay, len(groups["muon"].params)) == (0.026, 0.095, 66)
    assert (groups["token"].lr, groups["token"].weight_decay, groups["token"].params) == (0.03, 0.085, ["tok_emb.weight"])
    assert (groups["scalar"].lr, groups["scalar"].weight_decay) == (0.02, 0.02)
    assert {"lane_post", "skip_gates", "smear.gate", "blocks.0.attn.gate"} <= set(groups["scalar"].params)


def test_record_environment_variables():
    from pgolf.presets import resolve_config

    env = {"NUM_LOOPS": "1", "LOOP_START": "4", "LOOP_END": "6", "ENABLE_LOOPING_AT": "0.5", "MIN_LR": "0.05",
           "EMBED_WD": "0.1", "MUON_ROW_NORMALIZE": "0", "SKIP_GATES_ENABLED": "0", "PARALLEL_START_LAYER": "7"}
    cfg = resolve_config("record", env=env)
    m, t = cfg.model, cfg.train
    assert (m.num_loops, m.loop_start, m.loop_end, m.enable_looping_at, m.parallel_start_layer) == (1, 4, 6, 0.5, 7)
    assert (t.min_lr, t.embed_wd, t.muon_row_normalize, m.skip_gates) == (0.05, 0.1, False, False)
