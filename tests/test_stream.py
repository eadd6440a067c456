"""Tests of the causal evaluation harness (pgolf.eval.stream) and of every method and mixture in it:
the substitution test (each of the V tokens at a scored position: the distribution, the mixing
weight and the normaliser do not move and the probabilities sum to 1), rejection of cheating
methods by the harness, future-perturbation invariance of every TTT mode (bit for bit on CPU)
and the audit of the n-gram mixture's certificates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pgolf.config import ModelConfig, TTTConfig
from pgolf.eval.mixture import audit_certificates, ngram_mixture
from pgolf.eval.reveal import LegalityError, RevealedView
from pgolf.eval.stream import ModelMethod, StreamMethod, chunks_of, run_stream, units_of
from pgolf.eval.ttt import MODES, make_method
from pgolf.model.gpt import GPT

V, L, CHUNK, BOS = 32, 12, 4, 1
TTT = TTTConfig(lora_rank=2, chunk_tokens=CHUNK, lora_lr=3e-2, global_chunk_tokens=8, phase_docs=(1, 2))
ORDERS = (2, 4)


def small_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=V, num_layers=1, model_dim=16, num_heads=2, num_kv_heads=1, mlp_mult=2.0,
                      rope_dims=4, bigram_buckets=16, bigram_dim=4, value_embed_dim=4, value_embed_layers=(0,),
                      xsa_last_n=1)
    model = GPT(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    return model


def stream_of(n: int, seed: int = 0) -> np.ndarray:
    s = np.random.default_rng(seed).integers(2, V, n).astype(np.int64)
    s[0], s[9], s[21] = BOS, BOS, BOS  # three documents
    return s


def multi_doc_stream(n: int = 90, seed: int = 7) -> np.ndarray:
    """Six documents (for dealing units to ranks)."""
    s = np.random.default_rng(seed).integers(2, V, n).astype(np.int64)
    s[[0, 11, 25, 40, 58, 71]] = BOS
    return s


def score(mode: str, stream: np.ndarray, probe_every: int = 1):
    """Per-target log-probs of TTT ``mode`` (fresh model each time) and its harness result."""
    method = make_method(mode, small_model(), TTT, seq_len=L, bos_id=BOS)
    return run_stream(method, stream, V, seq_len=L, chunk=CHUNK, batch=3, bos_id=BOS, probe_every=probe_every)


def honest_mix(stream, res):
    """The audited causal n-gram mixture of a harness pass: (log-probs, mixing weights)."""
    out = ngram_mixture(stream, res.logp, res.entropy, V, ORDERS, audit=len(stream) - 1)
    return out["logp_mix"], out["lam"]


def cheating_mix(stream, res):
    """A blend whose weight depends on the scored token: `if p_ngram > p_neural: lam = 0.5`."""
    out = ngram_mixture(stream, res.logp, res.entropy, V, ORDERS, audit=0)
    p_nn, p_ng = np.exp(res.logp), np.exp(out["logp_ng"])
    lam = np.where(p_ng > p_nn, 0.5, 0.05)
    return np.log((1 - lam) * p_nn + lam * p_ng), lam


MIXTURES = {"none": None, "ngram": honest_mix}


def substitution_check(mode: str, mixture, stream: np.ndarray, p: int) -> None:
    """Put each of the V tokens at position p, the rest of the stream kept (the future after p
    included): what p is scored with must not move; P sums to 1."""
    probs, weights, others = [], [], []
    for v in range(V):
        s = stream.copy()
        s[p] = v
        res = score(mode, s, probe_every=0)
        logp, lam = (res.logp, None) if mixture is None else mixture(s, res)
        probs.append(np.exp(logp[p - 1]))
        others.append(res.entropy[p - 1])
        if lam is not None:
            weights.append(lam[p - 1])
    assert abs(sum(probs) - 1.0) < 1e-6, f"{mode}: probabilities of the V substitutes sum to {sum(probs)}"
    assert len(set(others)) == 1, f"{mode}: the distribution at {p} changed with the token at {p}"
    assert len(set(weights)) <= 1, f"{mode}: the mixing weight at {p} changed with the token at {p}"


SLOW_PAIRS = {("lora", "ngram"), ("phased", "ngram")}  # the mixture's weight is probed by none/global as well


@pytest.mark.parametrize("mode,mixture", [pytest.param(m, x, marks=[pytest.mark.slow] if (m, x) in SLOW_PAIRS else [])
                                          for m in MODES for x in sorted(MIXTURES)])
def test_substitution_every_method_and_mixture(mode, mixture):
    stream = stream_of(30)
    # mid-stream and mid-chunk in the second document (rows 0 and 1 of a 3-row batch in global
    # mode, so a later row of the batch holds the token); the first target after the third BOS
    for p in (11, 15, 22):
        substitution_check(mode, MIXTURES[mixture], stream, p)


def test_substitution_catches_a_weight_that_looks_at_the_target():
    with pytest.raises(AssertionError, match="sum to|weight"):
        substitution_check("none", cheating_mix, stream_of(30), 11)


@pytest.mark.parametrize("mixture", sorted(MIXTURES))
@pytest.mark.parametrize("mode", MODES)
def test_future_perturbation_leaves_past_scores_bit_identical(mode, mixture):
    """Every token after P randomized: the per-token scores at positions <= P are bitwise equal."""
    stream = stream_of(40, seed=1)
    mix = MIXTURES[mixture] or (lambda s, r: (r.logp, None))
    base = mix(stream, score(mode, stream))[0]
    for t in (5, 13, 22, 30):
        other = stream.copy()
        other[t + 1:] = np.random.default_rng(t).integers(0, V, len(stream) - t - 1)
        logp = mix(other, score(mode, other))[0]
        assert np.array_equal(logp[:t], base[:t]), f"{mode}/{mixture}: a score at <= {t} moved"
        assert not np.array_equal(logp, base)  # the perturbation did change later scores


@pytest.mark.parametrize("mode", MODES)
def test_every_target_scored_once_and_probed(mode):
    stream = stream_of(40, seed=2)
    res = score(mode, stream)
    assert res.logp.shape == (39,) and np.all(res.logp < 0) and res.units == 3 and res.probes > 0


def test_ttt_changes_scores_after_the_first_chunk_only():
    stream = stream_of(40, seed=3)
    base = score("none", stream)
    for mode in ("lora", "phased"):
        res = score(mode, stream)
        assert np.array_equal(res.logp[:CHUNK], base.logp[:CHUNK])
        assert not np.allclose(res.logp[CHUNK:9], base.logp[CHUNK:9])


class _PeekAtView(ModelMethod):
    name = "peek-view"
    batch_chunks = 1

    def begin_unit(self, view):
        view[view.revealed]  # the first token of the unit: not yet scored


class _PeekInWindow(ModelMethod):
    """Predicts each input's successor from the window itself (a leak within the chunk)."""

    name = "peek-window"

    def logits(self, inputs):
        nxt = torch.roll(inputs, -1, dims=1)
        return super().logits(inputs) + 20.0 * torch.nn.functional.one_hot(nxt, V).float()


class _TrainBeforeScoring(StreamMethod):
    """Fits the chunk's own tokens inside logits() before returning them."""

    name = "train-first"
    batch_chunks = 1

    def __init__(self):
        self.bias = torch.zeros(V)

    def logits(self, inputs):
        self.bias = self.bias + torch.nn.functional.one_hot(inputs[0, -1], V).float()
        return self.bias.expand(inputs.size(0), inputs.size(1), V).clone()


@pytest.mark.parametrize("cls", [_PeekAtView, _PeekInWindow])
def test_cheating_methods_are_rejected_by_the_harness(cls):
    method = cls(small_model())
    with pytest.raises(LegalityError):
        run_stream(method, stream_of(30), V, seq_len=L, chunk=CHUNK, bos_id=BOS, probe_every=1)


def test_stateful_cheat_is_rejected_by_the_probe():
    with pytest.raises(LegalityError, match="state changed inside logits"):
        run_stream(_TrainBeforeScoring(), stream_of(30), V, seq_len=L, chunk=CHUNK, bos_id=BOS, probe_every=1)


def test_revealed_view_refuses_the_future():
    buf = np.arange(10)
    view = RevealedView(buf, 4)
    assert list(view[:4]) == [0, 1, 2, 3] and view[3] == 3 and len(view) == 4
    for bad in (lambda: view[4], lambda: view[2:5], lambda: view[9]):
        with pytest.raises(LegalityError):
            bad()
    with pytest.raises(ValueError):
        view.tokens()[0] = 7  # read-only


def test_units_start_after_each_bos_and_chunks_tile_them():
    stream = stream_of(30)
    units = units_of(stream, BOS)
    assert units == [(1, 10), (10, 22), (22, 30)]  # each unit ends with the next BOS as its last target
    flat = [c for u in chunks_of(units, CHUNK) for c in u]
    assert [t for c in flat for t in range(c.start, c.end)] == list(range(1, 30))
    assert max(c.end - c.start for c in flat) == CHUNK


def test_harness_neural_matches_sliding_evaluation():
    from pgolf.data.tokenizer import ByteTables
    from pgolf.model.bpb import evaluate

    stream = stream_of(1 + 6 * L, seed=4)
    stream[[9, 21]] = 5  # one unit: chunks then fall on the sliding grid
    model = small_model()
    tables = ByteTables(np.ones(V, np.int32), np.zeros(V, bool), np.zeros(V, bool))
    ref = evaluate(model, stream, tables, seq_len=L, stride=CHUNK, per_token=True, progress=False)
    res = run_stream(ModelMethod(model), stream, V, seq_len=L, chunk=CHUNK, batch=4, bos_id=BOS)
    assert np.allclose(res.logp, ref.per_token["logp"], rtol=0, atol=1e-5)


def test_ngram_certificate_audit_rejects_a_tampered_certificate():
    stream = stream_of(40, seed=5)
    res = score("none", stream)
    out = ngram_mixture(stream, res.logp, res.entropy, V, ORDERS, audit=39)
    assert out["audited"] == 39
    from pgolf.eval.ngram import causal_logprobs

    cert = causal_logprobs(stream, res.logp, res.entropy, V, *ORDERS, per_token=True)
    cert["logp_ng"][20] += 0.01
    with pytest.raises(LegalityError, match="certificate at position 21"):
        audit_certificates(stream, res.logp, cert, [21], V, ORDERS)


def test_bad_chunk_is_one_clear_error():
    from pgolf.errors import PgolfError

    with pytest.raises(PgolfError, match="chunk must be between"):
        run_stream(ModelMethod(small_model()), stream_of(30), V, seq_len=L, chunk=L + 1)
