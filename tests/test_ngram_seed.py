"""The seed's two-pass / leave-one-out n-gram, re-derived here in plain numpy from
FACTS.md ("What the seed's own script does"), against pgolf's compiled kernels on the
shared validation split, with deterministic synthetic neural log-probs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from pgolf.eval.ngram_leaky import evaluate_ngram

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
VAL = DATA / "fineweb_sp1024" / "fineweb_val_000000.bin"
TOKENIZER = DATA / "tokenizers" / "fineweb_1024_bpe.model"

# FACTS.md: the seed's hash multipliers, alpha_max, floor, per-order multipliers.
P = np.array([36313, 27191, 51647, 81929, 131071, 174763, 233017, 283721, 347237, 411527, 479909,
              557927, 646333, 746773, 862319, 992353], dtype=np.int64)
ALPHA_MAX, FLOOR, MULTS = 0.70, 1e-10, {2: 0.30, 3: 0.30, 4: 0.97}
# The rest of the seed's blend (its lineage, PR #809/#870): 16M buckets, min count 2,
# alpha_min 0.05, entropy centre 3.0 - 0.25 (order - 2), sigmoid scale 2.0, clip 0.95.
BUCKETS, MIN_COUNT, ALPHA_MIN, CLIP = 1 << 24, 2, 0.05, 0.95


def seed_hashes(tokens: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Context and full buckets of order n for every target position t >= n-1."""
    t = np.arange(n - 1, len(tokens))
    h = np.zeros(len(t), np.int64)
    for k in range(n - 1):
        h ^= tokens[t - n + 1 + k] * P[k % 16]
    full = h ^ (tokens[t] * P[min(n - 1, 15)])
    return h & (BUCKETS - 1), full & (BUCKETS - 1)


def counts_at(keys: np.ndarray) -> np.ndarray:
    """How often each entry's key occurs in the whole array."""
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    return counts[inverse]


def seed_two_pass(tokens, logp, entropy, loo: bool, lo: int = 2, hi: int = 12) -> float:
    """Total nats of the seed's rescoring of every target tokens[1:]."""
    tokens = np.asarray(tokens, dtype=np.int64)
    n_targets = len(tokens) - 1
    p = np.exp(logp)
    done = np.zeros(n_targets, bool)
    for n in range(hi, lo - 1, -1):  # highest order first; a target takes the first that fits
        ctx, full = seed_hashes(tokens, n)
        c, f = counts_at(ctx), counts_at(full)
        if loo:
            c, f = c - 1, f - 1
        i = np.arange(n - 1, len(tokens)) - 1  # target index of each position
        ok = (c >= MIN_COUNT) & (f > 0) & ~done[i]
        i, c, f = i[ok], c[ok], f[ok]
        center = 3.0 - 0.25 * (n - lo)
        alpha = MULTS.get(n, 2.0) * (ALPHA_MIN + (ALPHA_MAX - ALPHA_MIN) / (1 + np.exp(-2.0 * (entropy[i] - center))))
        alpha = np.clip(alpha, 0.0, CLIP)
        p[i] = (1 - alpha) * p[i] + alpha * np.minimum(f, c) / c
        done[i] = True
    return float(-np.log(np.maximum(p, FLOOR)).sum())


@pytest.fixture(scope="module")
def val_inputs():
    if not VAL.is_file() or not TOKENIZER.is_file():
        pytest.skip("shared validation data not present")
    from pgolf.data.shards import read_shard
    from pgolf.data.tokenizer import byte_tables

    tokens = np.asarray(read_shard(VAL), dtype=np.int64)
    rng = np.random.default_rng(2024)
    n = len(tokens) - 1
    logp = np.log(rng.uniform(1e-4, 0.95, n))  # synthetic neural model, deterministic
    entropy = rng.uniform(0.2, 7.0, n)
    target_bytes = byte_tables(TOKENIZER).target_bytes(tokens[1:], tokens[:-1])
    return tokens, logp, entropy, target_bytes


@pytest.mark.parametrize("mode", ["two-pass", "loo"])
def test_pgolf_matches_the_seed_algorithm_on_the_validation_split(val_inputs, mode):
    tokens, logp, entropy, target_bytes = val_inputs
    res = evaluate_ngram(mode, tokens, logp, entropy, target_bytes)
    ref_bpb = seed_two_pass(tokens, logp, entropy, loo=mode == "loo") / math.log(2) / float(target_bytes.sum())
    print(f"{mode}: pgolf {res['val_bpb']:.8f} seed re-derivation {ref_bpb:.8f} (match rate {res['match_rate']:.3f})")
    assert res["val_bpb"] == pytest.approx(ref_bpb, abs=1e-6)
    assert res["match_rate"] > 0.3  # the cache is really used


def test_reference_is_sensitive_to_the_seed_constants(val_inputs):
    """The comparison can fail: a different alpha_max moves the score by far more than 1e-6."""
    global ALPHA_MAX
    tokens, logp, entropy, _ = val_inputs
    base = seed_two_pass(tokens[:50_000], logp[:49_999], entropy[:49_999], loo=False)
    old, ALPHA_MAX = ALPHA_MAX, 0.60
    try:
        changed = seed_two_pass(tokens[:50_000], logp[:49_999], entropy[:49_999], loo=False)
    finally:
        ALPHA_MAX = old
    assert abs(base - changed) / 49_999 > 1e-4
