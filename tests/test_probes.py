"""Run-time legality probes (pgolf.eval.probes) and the n-gram weight audit
(pgolf.eval.weight_audit), in process: the schedule, the state fingerprint, a method whose
row reads the next row of its batch, a method that trains inside logits() on every call
but a repeated one, and a blend weight that looks at the target.
Run: ``python -m pytest -q tests/test_probes.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pgolf.eval import ngram
from pgolf.eval.mixture import ngram_mixture
from pgolf.eval.probes import FIRST_CALLS, ProbeSchedule, fingerprint
from pgolf.eval.reveal import LegalityError
from pgolf.eval.stream import ModelMethod, run_stream
from pgolf.eval.ttt import make_method
from pgolf.eval.weight_audit import audit_weights, sample_positions
from test_stream import BOS, CHUNK, L, ORDERS, TTT, V, score, small_model, stream_of

sys.path.insert(0, str(Path(__file__).parent / "mutants"))
import a_train_in_logits  # noqa: E402
import b_weight_peeks  # noqa: E402
import c2_next_row  # noqa: E402
from pgolf.eval.ttt_docs import BatchedLora  # noqa: E402

ttt_docs_logits = BatchedLora.logits


def test_schedule_probes_the_first_calls_then_a_fraction():
    s = ProbeSchedule(16, seed=3)
    due = [s.due() for _ in range(8000)]
    assert all(due[:FIRST_CALLS]) and 1 / 24 < np.mean(due[FIRST_CALLS:]) < 1 / 10
    assert not any(ProbeSchedule(0).due() for _ in range(50)) and all(ProbeSchedule(1).due() for _ in range(50))
    a, b = ProbeSchedule(16), ProbeSchedule(16)  # seeded from os.urandom: the method cannot predict them
    assert [a.due() for _ in range(400)] != [b.due() for _ in range(400)]


def test_fingerprint_sees_in_place_updates_rebinding_and_arrays():
    class M:
        pass

    m = M()
    m.w, m.d, m.a = torch.zeros(3), {"x": [torch.ones(2)]}, np.zeros(4)
    f = fingerprint(m)
    assert fingerprint(m) == f
    for change in (lambda: m.w.add_(1), lambda: m.d["x"][0].mul_(2), lambda: setattr(m, "w", m.w.clone()),
                   lambda: m.a.__setitem__(0, 1.0), lambda: setattr(m, "n", 1)):
        change()
        assert fingerprint(m) != f
        f = fingerprint(m)


class _NextRow(ModelMethod):
    name = "next-row"
    logits = c2_next_row.cheating_logits


def test_a_row_reading_the_next_row_is_rejected(monkeypatch):
    monkeypatch.setattr(c2_next_row, "_honest", ModelMethod.logits)
    method = _NextRow(small_model())
    stream = stream_of(60, seed=4)
    for _ in range(4):  # the future probe cannot see it; the other-rows probe does
        with pytest.raises(LegalityError, match="other rows of its batch"):
            run_stream(method, stream, V, seq_len=L, chunk=CHUNK, batch=3, bos_id=BOS, probe_every=16)


def test_training_inside_logits_is_rejected(monkeypatch):
    from pgolf.eval.ttt_docs import BatchedLora, run_documents

    monkeypatch.setattr(BatchedLora, "logits", a_train_in_logits.cheating_logits)
    monkeypatch.setattr(a_train_in_logits, "_honest", ttt_docs_logits)
    method = BatchedLora(small_model(), TTT, seq_len=L, bos_id=BOS)
    with pytest.raises(LegalityError, match="state changed inside logits"):
        run_documents(method, stream_of(40, seed=5), V, L, CHUNK, doc_batch=3, bos_id=BOS, probe_every=16)


def test_honest_methods_pass_every_probe():
    for mode in ("none", "lora", "global", "phased"):
        assert score(mode, stream_of(60, seed=6), probe_every=1).probes > 0


def test_weight_audit_passes_the_honest_kernel_and_stops_a_peeking_one(monkeypatch):
    stream = stream_of(400, seed=8)
    res = score("none", stream, probe_every=0)
    out = ngram_mixture(stream, res.logp, res.entropy, V, ORDERS, audit=8)
    assert out["weights_audited"] >= 1
    for seed in range(5):
        assert audit_weights(stream, res.logp, res.entropy, out["lam"], V, ORDERS, seed=seed) >= 1
    monkeypatch.setattr(ngram, "causal_logprobs", b_weight_peeks.cheating_causal_logprobs)
    with pytest.raises(LegalityError, match="depends on the target"):
        ngram_mixture(stream, res.logp, res.entropy, V, ORDERS, audit=8)


def test_weight_audit_positions_cost_at_most_a_quarter_pass():
    rng = np.random.default_rng(0)
    for n in (1, 2, 10, 1000, 47_850_000):
        ps = sample_positions(n, rng)
        assert ps and all(1 <= p <= n for p in ps) and (sum(ps) <= max(1, n // 4) or len(ps) == 1)
