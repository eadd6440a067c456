"""torch.compile readiness on CPU: the seed's block and model trace with zero graph
breaks (QAT hooked), and QAT switches on and off without recompiling."""

from __future__ import annotations

import pytest
import torch

from pgolf.model.gpt import GPT
from pgolf.presets import get_preset
from pgolf.quant.schemes.qat import prepare_qat, qat_state, update_qat


def _seed_cfg(layers: int | None = None):
    cfg = get_preset("seed")
    if layers:
        m = cfg.model
        m.num_layers, m.xsa_last_n, m.value_embed_layers = layers, 1, (layers - 1,)
    return cfg


def test_seed_block_has_zero_graph_breaks(monkeypatch):
    cfg = _seed_cfg()
    monkeypatch.setattr(GPT, "reset_parameters", lambda self: None)  # values do not matter to a trace
    model = GPT(cfg.model)
    prepare_qat(model, cfg.quant)  # the fake-quant hooks are part of the traced forward
    block = model.blocks[12]  # XSA and value embedding on, as the seed's last block
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.02)
    d, kv = cfg.model.model_dim, cfg.model.num_kv_heads * (cfg.model.model_dim // cfg.model.num_heads)
    x, x0, ve = torch.randn(1, 16, d), torch.randn(1, 16, d), torch.randn(1, 16, kv)
    rope = block.attn.rotary.cos_sin(16, x.device, torch.float32)
    torch._dynamo.reset()
    ex = torch._dynamo.explain(block)(x, x0, ve, rope)
    assert ex.graph_break_count == 0, ex.break_reasons
    assert ex.graph_count == 1


def test_seed_model_with_qat_has_zero_graph_breaks_at_2048_rules():
    """The whole (shallow) seed model with QAT hooks, short sequence and the rescaled-RoPE path."""
    cfg = _seed_cfg(layers=2)
    cfg.model.rope_train_seq_len = 8  # T=16 > 8 exercises the rescaled base inside the trace
    model = GPT(cfg.model)
    prepare_qat(model, cfg.quant)
    idx = torch.randint(0, cfg.model.vocab_size, (1, 16))
    torch._dynamo.reset()
    ex = torch._dynamo.explain(model)(idx, idx)
    assert ex.graph_break_count == 0, ex.break_reasons


def test_compiled_model_switches_qat_on_and_off_without_recompiling():
    from torch._dynamo.testing import CompileCounter

    cfg = _seed_cfg(layers=2)
    cfg.model.model_dim, cfg.model.bigram_dim, cfg.model.value_embed_dim = 144, 32, 32
    cfg.quant.fp16_max_numel = 1024
    torch.manual_seed(0)
    model = GPT(cfg.model)
    prepare_qat(model, cfg.quant)
    counter = CompileCounter()
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    idx = torch.randint(0, cfg.model.vocab_size, (2, 16))
    seen = []
    for lr in (1.0, 0.4, 0.2, 0.05, 0.9, 0.05):
        update_qat(model, lr, cfg.quant)
        loss = compiled(idx, idx)
        loss.backward()
        with torch.no_grad():
            assert torch.equal(loss, model(idx, idx)), lr
        seen.append(sorted(set(qat_state(model).values()), key=str))
    assert counter.frame_count == 1
    assert [None] in seen and any(None not in s for s in seen)


@pytest.mark.parametrize("precision", ["bf16", "fp32-master"])
def test_model_compiles_in_both_precisions(precision):
    from torch._dynamo.testing import CompileCounter

    from pgolf.train.precision import apply_precision

    cfg = _seed_cfg(layers=2)
    cfg.model.model_dim, cfg.model.bigram_dim, cfg.model.value_embed_dim = 144, 32, 32
    model = GPT(cfg.model)
    apply_precision(model, precision)
    counter = CompileCounter()
    torch._dynamo.reset()
    loss = torch.compile(model, backend=counter, fullgraph=True)(*(torch.randint(0, 1024, (1, 16)),) * 2)
    assert torch.isfinite(loss) and counter.frame_count == 1
