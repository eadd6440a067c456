"""The causal n-gram mixture on top of a harness pass, with an audit of its certificates.

:func:`ngram_mixture` runs the causal n-gram of :mod:`pgolf.eval.ngram` (one compiled
left-to-right pass, score then count) over the per-target outputs of a harness pass
(:mod:`pgolf.eval.stream`): the neural log-prob of each target and the entropy of its
distribution, both fixed before that target was revealed. The kernel returns, per
target, the mixed log-prob together with its *certificate*: the n-gram's probability of
the target and the mixing weight ``lam``. The mixture is ``(1 - lam) P_nn + lam P_ng``
with ``P_ng`` a proper distribution over the vocabulary (interpolated discounting down
to an add-one unigram), so it is normalized whenever the certificate is honest.

The audit checks that at ``audit`` sampled positions p (deterministic, spread over the
stream): it recomputes the full n-gram distribution from the revealed prefix
``stream[:p]`` alone (:func:`pgolf.eval.ngram.ngram_distribution`, handed a
:class:`pgolf.eval.reveal.RevealedView`), requires it to sum to 1 and to give the target
the certified probability, and requires the certified mixture to equal the kernel's
mixed log-prob. A mismatch raises :class:`pgolf.eval.reveal.LegalityError`. That ``lam``
does not depend on the target is checked at run time by :mod:`pgolf.eval.weight_audit`
(reruns with substituted targets at sampled positions; ``weight_audited_positions``);
a generated train_gpt.py does not carry that module, and there the field is null.

    out = ngram_mixture(stream, logp, entropy, vocab_size, (2, 12), audit=8)
    out["logp_mix"], out["audited"]
"""

from __future__ import annotations

import numpy as np

from pgolf import features
from pgolf.eval.reveal import LegalityError, RevealedView


def _audit_positions(n_targets: int, count: int) -> list[int]:
    """``count`` target positions spread over 1..n_targets (stream coordinates)."""
    if count <= 0:
        return []
    return sorted({int(p) for p in np.linspace(1, n_targets, num=min(count, n_targets))})


def audit_certificates(stream, logp_nn, cert: dict, positions, vocab_size, orders, rtol=1e-9) -> int:
    """Check the kernel's certificates at ``positions`` against the reference; returns how many."""
    from pgolf.eval.ngram import CAUSAL_DEFAULTS, ngram_distribution

    buffer = np.zeros_like(stream)
    for p in positions:
        buffer[:p] = stream[:p]
        past = RevealedView(buffer, p)
        ref = ngram_distribution(past.tokens(), p, vocab_size, orders[0], orders[1], CAUSAL_DEFAULTS["discount"])
        y = int(stream[p])
        p_ng = float(np.exp(cert["logp_ng"][p - 1]))
        lam = float(cert["lam"][p - 1])
        p_mix = (1.0 - lam) * float(np.exp(logp_nn[p - 1])) + lam * p_ng
        if abs(ref.sum() - 1.0) > 1e-9 or not np.isclose(ref[y], p_ng, rtol=rtol, atol=0.0):
            raise LegalityError(f"n-gram certificate at position {p}: reference P(target) {ref[y]:.6g} (sum "
                                f"{ref.sum():.9f}) vs kernel {p_ng:.6g}")
        if not 0.0 <= lam <= 1.0 or not np.isclose(np.log(p_mix), cert["logp_mix"][p - 1], rtol=0.0, atol=1e-9):
            raise LegalityError(f"n-gram mixture at position {p}: lam {lam} does not reproduce the mixed log-prob")
    return len(positions)


def ngram_mixture(stream, logp_nn, entropy, vocab_size: int, orders: tuple[int, int], audit: int = 8,
                  progress: bool = False) -> dict:
    """Causal n-gram blended with a harness pass's outputs; ``logp_mix`` per target, audited."""
    from pgolf.eval.ngram import causal_logprobs

    stream = np.asarray(stream)
    cert = causal_logprobs(stream, logp_nn, entropy, vocab_size, orders[0], orders[1], per_token=True,
                           progress=progress)
    audited = audit_certificates(stream, logp_nn, cert, _audit_positions(len(stream) - 1, audit), vocab_size, orders)
    wa = features.optional("pgolf.eval.weight_audit") if audit else None  # not in train_gpt.py
    weights = wa.audit_weights(stream, logp_nn, entropy, cert["lam"], vocab_size, orders) if wa else None
    return {"logp_mix": cert["logp_mix"], "logp_ng": cert["logp_ng"], "lam": cert["lam"], "audited": audited,
            "weights_audited": weights}


def causal_block(stream, logp_nn, entropy, target_bytes, vocab_size: int, orders: tuple[int, int], audit: int = 8,
                 progress: bool = False) -> tuple[dict, np.ndarray]:
    """(eval.json n-gram block, per-target mixed log-probs) of the audited causal mixture."""
    import math
    import time

    from pgolf.eval.ngram import LABELS

    t0 = time.perf_counter()
    out = ngram_mixture(stream, logp_nn, entropy, vocab_size, orders, audit=audit, progress=progress)
    n, total_bytes = len(stream) - 1, float(np.sum(target_bytes, dtype=np.float64))
    nats, nats_ng = -float(np.sum(out["logp_mix"])), -float(np.sum(out["logp_ng"]))
    elapsed = time.perf_counter() - t0
    block = {"mode": "causal", "valid": True, "label": LABELS["causal"], "orders": list(orders), "tokens": n,
             "bytes": total_bytes, "val_loss": nats / n, "val_bpb": nats / math.log(2) / total_bytes,
             "ngram_only_loss": nats_ng / n, "ngram_only_bpb": nats_ng / math.log(2) / total_bytes,
             "audited_positions": out["audited"], "weight_audited_positions": out["weights_audited"], "timings": {"total_s": elapsed}}
    return block, out["logp_mix"]
