"""The record preset's forward pass against a from-first-principles reference of record #1855's.

The reference below is written from FACTS.md ("the record's forward pass") and issue #17 in
plain float64 torch ops; it imports nothing from pgolf.model. It reads pgolf's weights by
name (the record's layout: ``lane_post`` is [layer, source (attn, mlp), lane]) and checks
the record preset's logits at T = 2048 (``-m slow``; T = 256 in the default suite), 11
layers, width 128, every feature on, every control tensor moved off its init, windows
containing BOS, loops off and on: max |dlogit| <= 1e-4.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pgolf.config import ModelConfig
from pgolf.presets import get_preset

BOS = 1


def record_small() -> ModelConfig:
    """The record preset's model at width 128 (head dim 32, 16 rotary dims), vocab 128."""
    m = get_preset("record").model
    m.vocab_size, m.model_dim, m.num_heads, m.num_kv_heads = 128, 128, 4, 2
    return m


def rms(x):
    return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + torch.finfo(torch.float32).eps)


def ref_attention(w, i, x, doc, cfg):
    """q/k RMS norm, half-split partial RoPE, q gain, GQA attention inside each document
    (``doc``: [T] document index), XSA, the sparse head gate, the out projection."""
    t, d = x.shape
    h, kv = cfg.num_heads, cfg.num_kv_heads
    hd = d // h
    p = f"blocks.{i}.attn."
    q = (x @ w[p + "q.weight"].T).view(t, h, hd)
    k = (x @ w[p + "k.weight"].T).view(t, kv, hd)
    v = (x @ w[p + "v.weight"].T).view(t, kv, hd)
    q, k = rms(q), rms(k)
    rd = cfg.rope_dims
    inv = 1.0 / (cfg.rope_base ** (torch.arange(0, rd, 2, dtype=torch.float64) / rd))
    ang = torch.arange(t, dtype=torch.float64)[:, None] * inv[None, :]
    cos, sin = ang.cos()[:, None, :], ang.sin()[:, None, :]

    def rope(z):
        a, b = z[..., : rd // 2], z[..., rd // 2: rd]
        return torch.cat((a * cos + b * sin, b * cos - a * sin, z[..., rd:]), dim=-1)

    q, k = rope(q), rope(k)
    q = q * w[p + "q_gain"][None, :, None]
    rep = h // kv
    kk, vv = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    scores = torch.einsum("thd,shd->hts", q, kk) / math.sqrt(hd)
    pos = torch.arange(t)
    allowed = (pos[None, :] <= pos[:, None]) & (doc[None, :] == doc[:, None])
    scores = scores.masked_fill(~allowed, float("-inf"))
    y = torch.einsum("hts,shd->thd", scores.softmax(-1), vv)
    vn = F.normalize(v, dim=-1).repeat_interleave(rep, dim=1)  # XSA on every layer
    y = y - (y * vn).sum(-1, keepdim=True) * vn
    gate = torch.sigmoid(cfg.sparse_attn_gate_scale * x[:, : cfg.gate_window] @ w[p + "gate"].T)
    y = y * gate[..., None]
    return y.reshape(t, d) @ w[p + "out.weight"].T


def ref_block_branches(w, i, attn_in, mlp_in, x0, doc, cfg):
    """(attn, mlp) branch outputs of block i, the attention reading resid_mix of attn_in and x0."""
    p = f"blocks.{i}."
    ln = 1.0 / math.sqrt(i + 1)
    mix = w[p + "resid_mix"]
    a_in = mix[0] * attn_in + mix[1] * x0
    att = w[p + "attn_scale"] * ref_attention(w, i, rms(a_in) * ln, doc, cfg)
    return att, a_in


def ref_mlp(w, i, x):
    p = f"blocks.{i}."
    h = F.leaky_relu(rms(x) / math.sqrt(i + 1) @ w[p + "mlp.up.weight"].T, 0.5).square()
    return w[p + "mlp_scale"] * (h @ w[p + "mlp.down.weight"].T)


def record_reference(w, ids, cfg, looping: bool):
    """Logits [T, V] of one window ``ids`` [T] under the record's forward (FACTS.md)."""
    doc = torch.cumsum((ids == BOS).long(), 0)  # attention never crosses a document start
    x = w["tok_emb.weight"][ids]
    prev = torch.cat((torch.zeros_like(x[:1]), x[:-1]))
    prev = torch.where((ids == BOS)[:, None], torch.zeros_like(prev), prev)  # the BOS fix
    x = x + w["smear.lam"] * torch.sigmoid(x[:, : cfg.gate_window] @ w["smear.gate"].T) * prev  # raw embedding
    x = rms(x)
    x0 = x
    L = cfg.num_layers
    if looping:
        span = list(range(cfg.loop_start, cfg.loop_end + 1))
        order = list(range(cfg.loop_start)) + span * (1 + cfg.num_loops) + list(range(cfg.loop_end + 1, L))
    else:
        order = list(range(L))
    n_enc = len(order) // 2
    n_skip = min(n_enc, len(order) - n_enc)
    skips, lane0, lane1 = [], None, None
    for v, i in enumerate(order):
        if lane0 is None and i >= cfg.parallel_start_layer:
            lane0 = lane1 = x  # the first parallel layer: split, then the skip reaches lane 0 only
        j = v - n_enc
        if 0 <= j < n_skip:
            s = w["skip_weights"][j] * skips.pop()
            g = torch.sigmoid(w["skip_gates"][j])
            if lane0 is None:
                x = torch.lerp(s, x, g)
            else:
                lane0 = torch.lerp(s, lane0, g)
        if lane0 is None:
            att, a_in = ref_block_branches(w, i, x, None, x0, doc, cfg)
            x = a_in + att
            x = x + ref_mlp(w, i, x)
        else:
            att, _ = ref_block_branches(w, i, lane0, None, x0, doc, cfg)
            mlp = ref_mlp(w, i, lane1)
            P, r = w["lane_post"][i], w["lane_resid"][i]  # P[source, lane]
            lane0, lane1 = (r[0] * lane0 + P[0, 0] * att + P[1, 0] * mlp,
                            r[1] * lane1 + P[0, 1] * att + P[1, 1] * mlp)
        if v < n_enc:
            skips.append(x)
    if lane0 is not None:
        x = 0.5 * (lane0 + lane1)
    logits = rms(x) @ w["tok_emb.weight"].T
    return cfg.logit_softcap * torch.tanh(logits / cfg.logit_softcap)


def windows_with_bos(n: int, t: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, 128, (n, t), generator=g)
    for row in range(n):
        for p in torch.randint(1, t, (6,), generator=g):  # documents of random lengths
            ids[row, p] = BOS
    ids[0, 0] = BOS
    return ids


def randomized_record_model(cfg):
    from pgolf.model.gpt import GPT

    torch.manual_seed(0)
    model = GPT(cfg)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "tok_emb.weight":
                p.add_(torch.randn(p.shape, generator=g) * 2.0 / math.sqrt(p.shape[-1]))  # logits of std ~2
            elif p.dim() >= 2 and "gate" not in name and "lane" not in name and "skip" not in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.5 / math.sqrt(p.shape[-1]))  # zero-init outs too
            else:
                p.add_(torch.randn(p.shape, generator=g) * 0.3)  # every control tensor off its init
    return model


def check_against_reference(looping: bool, t: int) -> None:
    cfg = record_small()
    assert cfg.doc_attention and cfg.parallel_start_layer == 8 and cfg.num_loops == 2 and cfg.num_layers == 11
    model = randomized_record_model(cfg).eval()
    model.looping = looping
    ids = windows_with_bos(1, t)
    with torch.no_grad():
        ours = model.forward_logits(ids)[0].double()
        w = {k: v.double() for k, v in model.state_dict().items()}
        ref = record_reference(w, ids[0], cfg, looping)
    assert ref.std() > 0.5  # the logits are not degenerate
    diff = (ours - ref).abs().max().item()
    assert diff <= 1e-4, f"max |dlogit| {diff:.3g} (logit std {ref.std():.3g})"


@pytest.mark.slow
@pytest.mark.parametrize("looping", [False, True], ids=["loops-off", "loops-on"])
def test_record_preset_is_the_records_forward_at_2048(looping):
    check_against_reference(looping, 2048)


@pytest.mark.parametrize("looping", [False, True], ids=["loops-off", "loops-on"])
def test_record_preset_is_the_records_forward_at_256(looping):
    check_against_reference(looping, 256)


def test_lane_resid_starts_at_the_records_1_1():
    from pgolf.model.gpt import GPT

    model = GPT(record_small())
    assert torch.equal(model.lane_resid, torch.full((11, 2), 1.1))
    assert torch.equal(model.lane_post, torch.ones(11, 2, 2))
