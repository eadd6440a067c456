"""Run-time check that the causal n-gram's blend weight does not depend on the target.

For a few sampled target positions p (drawn from ``os.urandom``, so the kernel cannot
know them), the same kernel is rerun on the prefix ``stream[:p+1]`` twice, each time with
the target ``stream[p]`` replaced by another token and the network's log-prob of the
target replaced (once by ~0 nats, once by 27 nats): the weight ``lam`` at p must come out
bit-identical to the one the real pass certified. A weight that looks at the target (or
at the network's probability of it) changes under one of the two and raises
:class:`pgolf.eval.reveal.LegalityError`. Cost: the positions are drawn so that their
prefixes add up to at most a quarter of the stream, i.e. two reruns cost at most half a
pass. What it cannot see: a kernel that recognizes a rerun (a shorter stream) and
behaves honestly only then.

    audited = audit_weights(stream, logp_nn, entropy, lam, vocab_size, (2, 12))
"""

from __future__ import annotations

import os

import numpy as np

from pgolf.eval.reveal import LegalityError

MAX_POSITIONS = 4
SUBSTITUTES = ((1, -1e-6), (2, -27.0))  # (token offset, log-prob given to the substituted target)


def sample_positions(n_targets: int, rng, max_positions: int = MAX_POSITIONS) -> list[int]:
    """Random target positions (1..n) whose prefixes add up to at most n/4 (at least one)."""
    budget, out = max(1, n_targets // 4), []
    for _ in range(max_positions):
        p = int(rng.integers(1, max(2, min(n_targets, budget) + 1)))
        if out and p > budget:
            break
        out.append(p)
        budget -= p
        if budget <= 0:
            break
    return sorted(set(out))


def audit_weights(stream, logp_nn, entropy, lam, vocab_size: int, orders, seed: int | None = None) -> int:
    """Re-derive ``lam`` at sampled positions with substituted targets; returns how many were checked."""
    from pgolf.eval.ngram import causal_logprobs

    stream, n = np.asarray(stream), len(stream) - 1
    rng = np.random.default_rng(seed if seed is not None else int.from_bytes(os.urandom(8), "little"))
    positions = sample_positions(n, rng)
    for p in positions:
        for shift, logp in SUBSTITUTES:
            s, lp = stream[: p + 1].copy(), np.array(logp_nn[:p], np.float64)
            s[p], lp[p - 1] = (int(s[p]) + shift) % vocab_size, logp
            again = causal_logprobs(s, lp, np.asarray(entropy[:p]), vocab_size, orders[0], orders[1],
                                    per_token=True)["lam"][p - 1]
            if again != lam[p - 1]:
                raise LegalityError(f"n-gram weight at position {p} depends on the target: {lam[p - 1]:.6g}, "
                                    f"{again:.6g} with another target")
    return len(positions)
