"""The record stack's model switches (#1855): parameter layout, each switch alone,
depth recurrence switch-on under torch.compile, BOS isolation by perturbation."""

from __future__ import annotations

import pytest
import torch

from pgolf.config import ModelConfig
from pgolf.model.gpt import GPT, count_params
from pgolf.model.layers import SmearGate
from pgolf.model.record import WindowSmearGate, layer_order
from pgolf.presets import get_preset
from test_model import randomize


def small(**kw) -> ModelConfig:
    base = dict(vocab_size=64, num_layers=6, model_dim=32, num_heads=4, num_kv_heads=2, mlp_mult=2.0, rope_dims=4,
                bigram_buckets=0, value_embed_dim=0, value_embed_layers=(), xsa_last_n=6, gate_window=4)
    base.update(kw)
    return ModelConfig(**base)


def test_record_param_count_and_tensors(monkeypatch):
    monkeypatch.setattr(GPT, "reset_parameters", lambda self: None)
    with torch.device("meta"):
        model = GPT(get_preset("record").model)
    assert count_params(model) == 35_945_671  # the record's logged model_params
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    expected = {"tok_emb.weight": (8192, 512), "skip_weights": (8, 512), "skip_gates": (8, 512),
                "lane_post": (11, 2, 2), "lane_resid": (11, 2), "smear.lam": (), "smear.gate": (1, 12)}
    for i in range(11):
        expected.update({f"blocks.{i}.attn.q.weight": (512, 512), f"blocks.{i}.attn.out.weight": (512, 512),
                         f"blocks.{i}.attn.k.weight": (256, 512), f"blocks.{i}.attn.v.weight": (256, 512),
                         f"blocks.{i}.mlp.up.weight": (2048, 512), f"blocks.{i}.mlp.down.weight": (512, 2048),
                         f"blocks.{i}.attn_scale": (512,), f"blocks.{i}.mlp_scale": (512,),
                         f"blocks.{i}.resid_mix": (2, 512), f"blocks.{i}.attn.q_gain": (8,),
                         f"blocks.{i}.attn.gate": (8, 12)})
    assert shapes == expected  # every tensor FACTS.md lists, and nothing else


def test_layer_order_matches_the_records_log():
    order = layer_order(11, 2, 3, 5)
    enc = len(order) // 2
    assert order[:enc] == [0, 1, 2, 3, 4, 5, 3, 4]
    assert order[enc:] == [5, 3, 4, 5, 6, 7, 8, 9, 10]
    assert layer_order(11, 0, 3, 5) == list(range(11))


SWITCHES = [dict(num_loops=2, loop_start=1, loop_end=3), dict(parallel_start_layer=3), dict(skip_gates=True),
            dict(sparse_attn_gate=True), dict(smear_mode="window"), dict(doc_isolation=True),
            dict(num_loops=1, loop_start=2, loop_end=2, parallel_start_layer=4, skip_gates=True,
                 sparse_attn_gate=True, smear_mode="window", doc_isolation=True)]


@pytest.mark.parametrize("kw", SWITCHES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_each_switch_shapes_and_a_gradient_step(kw):
    torch.manual_seed(0)
    model = randomize(GPT(small(**kw)))
    idx = torch.randint(0, 64, (2, 12))
    idx[:, 5] = 1  # a document start inside the window
    logits = model.forward_logits(idx)
    assert logits.shape == (2, 12, 64)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    loss0 = model(idx, idx)
    loss0.backward()
    new = [n for n in dict(model.named_parameters()) if n.startswith(("lane_", "skip_gates", "smear.")) or ".attn.gate" in n]
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if name in new:
            assert p.grad.abs().sum() > 0, name  # the switch's own parameters learn
    opt.step()
    assert model(idx, idx).item() < loss0.item()


def test_sparse_attention_gate_starts_at_one_half():
    cfg = small(sparse_attn_gate=True)
    gated = randomize(GPT(cfg))
    with torch.no_grad():
        for b in gated.blocks:
            b.attn.gate.zero_()  # the record's init (std 0): sigmoid(0) = 0.5 on every head
    plain = GPT(small())
    plain.load_state_dict({k: v for k, v in gated.state_dict().items() if not k.endswith("attn.gate")})
    x = torch.randn(2, 7, 32)
    assert torch.allclose(gated.blocks[0].attn(x), 0.5 * plain.blocks[0].attn(x), atol=1e-6)
    with torch.no_grad():
        gated.blocks[0].attn.gate[1, 0] = 3.0  # head 1 now depends on x[..., 0]
    assert not torch.allclose(gated.blocks[0].attn(x), 0.5 * plain.blocks[0].attn(x), atol=1e-4)


def test_skip_gates_lerp_between_skip_and_stream():
    model = GPT(small(skip_gates=True))
    x, skip = torch.randn(1, 3, 32), torch.randn(1, 3, 32)
    out = model._add_skip(x, skip, 0)
    assert torch.allclose(out, 0.5 * x + 0.5 * skip)  # gate init 0
    with torch.no_grad():
        model.skip_gates[0].fill_(20.0)
    assert torch.allclose(model._add_skip(x, skip, 0), x, atol=1e-6)


def test_parallel_lanes_differ_from_sequential_and_start_at_the_layer():
    seq = randomize(GPT(small()))
    par = GPT(small(parallel_start_layer=3))
    par.load_state_dict({**seq.state_dict(), "lane_post": par.lane_post, "lane_resid": par.lane_resid})
    idx = torch.randint(0, 64, (2, 10))
    assert not torch.allclose(seq.forward_logits(idx), par.forward_logits(idx), atol=1e-4)
    late = GPT(small(parallel_start_layer=5))  # lanes only in the last block
    late.load_state_dict({**seq.state_dict(), "lane_post": late.lane_post, "lane_resid": late.lane_resid})
    h_seq, h_late = [], []
    seq.blocks[4].register_forward_hook(lambda m, i, o: h_seq.append(o))
    late.blocks[4].register_forward_hook(lambda m, i, o: h_late.append(o))
    seq.forward_logits(idx), late.forward_logits(idx)
    assert torch.equal(h_seq[0], h_late[0])  # blocks before the start run sequentially, unchanged


@pytest.mark.parametrize("gate", [SmearGate(8), WindowSmearGate(4)], ids=["channel", "window"])
def test_bos_isolation_by_perturbation(gate):
    with torch.no_grad():
        for p in gate.parameters():
            p.fill_(0.7)
    x = torch.randn(1, 6, 8)
    bos = torch.zeros(1, 6, dtype=torch.bool)
    bos[0, 3] = True
    y = x.clone()
    y[0, 2] += 5.0  # the last token of the previous document
    iso_x, iso_y = gate(x, bos), gate(y, bos)
    assert torch.equal(iso_x[0, 3:], iso_y[0, 3:])  # the new document does not see it
    assert not torch.allclose(gate(x)[0, 3], gate(y)[0, 3])  # without isolation it leaks


def test_doc_isolation_in_the_model():
    model = randomize(GPT(small(doc_isolation=True, smear_mode="window", num_layers=1, xsa_last_n=0)))
    a = torch.randint(2, 64, (1, 8))
    a[0, 4] = 1
    b = a.clone()
    b[0, 3] = (a[0, 3] + 1) % 62 + 2
    # only the smear mixes neighbours before attention; the block input at BOS is unchanged
    grab = []
    model.blocks[0].register_forward_pre_hook(lambda m, args: grab.append(args[0]))
    model.forward_logits(a), model.forward_logits(b)
    assert torch.equal(grab[0][0, 4], grab[1][0, 4])


def test_loop_switch_on_recompiles_once():
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    counter = CompileCounter()
    model = randomize(GPT(small(num_loops=2, loop_start=1, loop_end=2)))
    model.looping = False
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    idx = torch.randint(0, 64, (2, 8))
    for _ in range(3):
        plain = compiled(idx, idx)
    assert counter.frame_count == 1
    assert torch.allclose(plain, model(idx, idx), atol=1e-5)
    model.looping = True
    for _ in range(3):
        looped = compiled(idx, idx)
    assert counter.frame_count == 2  # one more graph for the looped order, none after
    assert torch.allclose(looped, model(idx, idx), atol=1e-5) and not torch.allclose(looped, plain)
    torch._dynamo.reset()


def test_flops_per_token_counts_each_run_of_a_recurrent_block():
    from types import SimpleNamespace

    from pgolf.train.trainer import flops_per_token

    cfg = small(num_loops=2, loop_start=1, loop_end=2)
    model = GPT(cfg)
    run = SimpleNamespace(model=cfg, train=SimpleNamespace(seq_len=16))
    model.looping = False
    plain = flops_per_token(model, run)
    model.looping = True
    per_block = sum(p.numel() for p in model.blocks[1].parameters())  # blocks 1 and 2 run twice more
    assert flops_per_token(model, run) - plain == 6.0 * 4 * per_block + 6.0 * 4 * 32 * 16
