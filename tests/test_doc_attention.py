"""Document-isolated attention (model.doc_attention, pgolf.model.docattn), by perturbation.

Changing a previous document leaves every score of the next document bit for bit
unchanged: in the training forward pass, the standard and sliding evaluations
(pgolf.model.bpb.evaluate) and TTT scoring (the causal harness run_stream driving a TTT
method). Each check also runs with the switch off and sees the leak, so it can fail.
The segment rule is checked against a plain-Python reading of the record's: a segment
starts at every BOS and every seg_len tokens inside a longer document.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pgolf.config import ModelConfig, TTTConfig
from pgolf.model.gpt import GPT
from test_bpb import fake_tables

BOS, V = 1, 64


def cfg(doc_attention: bool) -> ModelConfig:
    """Every record feature on, small."""
    return ModelConfig(vocab_size=V, num_layers=4, model_dim=32, num_heads=4, num_kv_heads=2, mlp_mult=2.0,
                       rope_dims=4, bigram_buckets=0, value_embed_dim=0, value_embed_layers=(), xsa_last_n=4,
                       gate_window=4, smear_mode="window", doc_isolation=True, sparse_attn_gate=True,
                       skip_gates=True, parallel_start_layer=2, num_loops=1, loop_start=1, loop_end=2,
                       doc_attention=doc_attention, rope_train_seq_len=0)


def model_of(doc_attention: bool) -> GPT:
    torch.manual_seed(0)
    model = GPT(cfg(doc_attention))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    return model


def two_streams(n: int, boundary: int, seed: int = 0):
    """A stream whose document starting at ``boundary`` follows another, and the same stream
    with the earlier document's tokens changed (same length)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(2, V, n).astype(np.int64)
    a[0], a[boundary] = BOS, BOS
    b = a.copy()
    b[1:boundary] = rng.integers(2, V, boundary - 1)
    return a, b


def reference_starts(row: list[int], seg_len: int) -> list[bool]:
    out, since = [], 0
    for t, tok in enumerate(row):
        if t == 0 or tok == BOS:
            since = 0
        out.append(since % seg_len == 0 if seg_len else since == 0)
        since += 1
    return out


def test_segment_starts_follow_the_records_rule():
    from pgolf.model.docattn import cu_seqlens, segment_starts

    rng = np.random.default_rng(1)
    idx = torch.from_numpy(rng.integers(2, 9, (3, 40)))
    idx[0, [5, 6, 30]] = BOS
    idx[2, 0] = BOS
    for seg_len in (0, 7, 64):
        got = segment_starts(idx, BOS, seg_len)
        assert got.tolist() == [reference_starts(r, seg_len) for r in idx.tolist()]
    starts = segment_starts(idx, BOS, 7)
    cu = cu_seqlens(starts)
    flat = np.flatnonzero(starts.reshape(-1).numpy())
    assert cu.dtype == torch.int32 and cu.numel() == idx.numel() + 1
    assert cu[: len(flat)].tolist() == flat.tolist() and set(cu[len(flat):].tolist()) == {idx.numel()}


@pytest.mark.parametrize("looping", [False, True], ids=["loops-off", "loops-on"])
def test_training_forward_next_document_bitwise_unchanged(looping):
    a, b = two_streams(48, 20)
    for on in (True, False):
        model = model_of(on).train()
        model.looping = looping
        la = model.forward_logits(torch.from_numpy(a)[None])
        lb = model.forward_logits(torch.from_numpy(b)[None])
        same = torch.equal(la[0, 20:], lb[0, 20:])
        assert same == on  # isolated: identical; without the switch the next document sees the change
    loss = model_of(True)(torch.from_numpy(a)[None, :-1], torch.from_numpy(a)[None, 1:])
    loss.backward()  # trains: gradients through the masked attention
    assert torch.isfinite(loss)


@pytest.mark.parametrize("stride", [None, 8], ids=["standard", "sliding"])
def test_eval_next_document_bitwise_unchanged(stride):
    from pgolf.model.bpb import evaluate

    seq, boundary = 32, 45  # document 2 starts inside the second window; windows cross it
    a, b = two_streams(4 * seq + 1, boundary)
    for on in (True, False):
        model = model_of(on)
        pa, pb = (evaluate(model, s, fake_tables(), seq_len=seq, stride=stride, batch_seqs=3, per_token=True,
                           progress=False).per_token["logp"] for s in (a, b))
        # target j is token j+1: targets from the one after the BOS on belong to the next document
        same = np.array_equal(pa[boundary:], pb[boundary:])
        assert same == on


def test_ttt_scoring_next_document_bitwise_unchanged():
    from pgolf.eval.stream import run_stream
    from pgolf.eval.ttt import make_method

    ttt = TTTConfig(lora_rank=2, chunk_tokens=4, lora_lr=3e-2)
    seq, boundary = 16, 13
    a, b = two_streams(40, boundary)
    for on in (True, False):
        scores = []
        for s in (a, b):
            method = make_method("lora", model_of(on), ttt, seq_len=seq, bos_id=BOS)
            scores.append(run_stream(method, s, V, seq_len=seq, chunk=4, batch=1, bos_id=BOS, probe_every=0).logp)
        same = np.array_equal(scores[0][boundary:], scores[1][boundary:])
        assert same == on


def test_record_features_trace_as_one_graph():
    """The forward with every record feature (document segments included) compiles fullgraph."""
    from torch._dynamo.testing import CompileCounter

    model = model_of(True)
    model.looping = True
    idx = torch.from_numpy(two_streams(24, 9)[0])[None]
    torch._dynamo.reset()
    counter = CompileCounter()
    out = torch.compile(model.forward_logits, backend=counter, fullgraph=True)(idx)
    assert counter.frame_count == 1 and torch.allclose(out, model.forward_logits(idx), atol=1e-5)
    torch._dynamo.reset()
