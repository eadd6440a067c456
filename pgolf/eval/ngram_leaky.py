"""The seed's leaky n-gram modes ``two-pass`` and ``loo`` (see :mod:`pgolf.eval.ngram`).

Hashed context / context+target count tables over the WHOLE stream, then every token
rescored with the seed's unnormalized blend (``loo`` first subtracts the token's own
occurrence). For reproducing the seed's numbers only: neither is a valid compression
rate, ``pgolf submit`` refuses them, and so the generated ``train_gpt.py`` never carries
this module (``pgolf eval`` reaches it via :mod:`pgolf.features` when ``eval.ngram`` is
``two-pass`` or ``loo``). :func:`evaluate_ngram`
scores a mode (these two or ``causal``, for comparison) as the ``ngram`` block of eval.json.

    r = two_pass_logprobs(tokens, logp, entropy, loo=False)   # {"nats_mix", "match_rate", ...}
    res = evaluate_ngram("two-pass", tokens, logp, entropy, target_bytes)
    print(res["label"], res["val_bpb"])
"""

from __future__ import annotations

import math
import time

import numba
import numpy as np

from pgolf.eval.ngram import LABELS, NgramError, _check_inputs, _float_array, _token_array, causal_logprobs

#: The seed's two-pass constants, reproduced exactly (FACTS.md, "What the seed's own
#: script does"): orders 2-12, 16,777,216 hashed buckets per order and table (context,
#: context+target), min count 2, highest-order backoff with p_ng = min(full, ctx) / ctx,
#: alpha = a_min + (a_max - a_min) * sigmoid(scale * (H - center)) with center = 3.0 -
#: 0.25 * (order - min_order), per-order multipliers 0.30, 0.30, 0.97, then 2.0, clip
#: 0.95, p = max((1 - alpha) p_nn + alpha p_ng, 1e-10); alpha_max 0.70. The hash is the
#: seed's: order-n context at t = XOR_k token[t-n+1+k] * SEED_PRIMES[k % 16], the full
#: key XORs in token[t] * SEED_PRIMES[min(n-1, 15)], masked to the bucket count.
TWO_PASS_DEFAULTS = dict(
    buckets=16_777_216,
    min_count=2,
    alpha_min=0.05,
    alpha_max=0.70,
    ent_center=3.0,        # entropy center of the lowest order...
    ent_center_step=0.25,  # ...lowered by this much per order above it
    ent_scale=2.0,
    order_mults=(0.3, 0.3, 0.97),  # orders min, min+1, min+2; 2.0 for every higher order
    high_order_mult=2.0,
    clip=0.95,
    floor=1e-10,
)

#: The seed's hash multipliers (FACTS.md).
SEED_PRIMES = (36313, 27191, 51647, 81929, 131071, 174763, 233017, 283721, 347237, 411527, 479909,
               557927, 646333, 746773, 862319, 992353)


@numba.njit(cache=True, inline="always")
def _order_hashes(tokens, j, K, primes, mask, ck, fk):
    """The seed's hashed context / context+target buckets of every context width 1..K-1
    at target j: for order n = width + 1, XOR over k = 0..n-2 of token[j-n+1+k] *
    primes[k % 16] (raw ids, int64), masked; the full key XORs in token[j] *
    primes[min(n-1, 15)]. Returns the widest width that fits before j."""
    np_ = primes.shape[0]
    top = 0
    for wd in range(1, K):
        if j - wd < 0:
            break
        h = np.int64(0)
        for k in range(wd):
            h ^= np.int64(tokens[j - wd + k]) * primes[k % np_]
        ck[wd] = h & mask
        fk[wd] = (h ^ (np.int64(tokens[j]) * primes[min(wd, np_ - 1)])) & mask
        top = wd
    return top


@numba.njit(cache=True)
def twopass_build(tokens, K, kmin, mask, primes, ctx_tab, full_tab):
    """Count every (context) and (context, target) of orders kmin..K over all targets."""
    ck = np.zeros(K, np.int64)
    fk = np.zeros(K, np.int64)
    for j in range(1, tokens.shape[0]):
        top = _order_hashes(tokens, j, K, primes, mask, ck, fk)
        for wd in range(kmin - 1, top + 1):
            o = wd + 1 - kmin
            ctx_tab[o, ck[wd]] += 1
            full_tab[o, fk[wd]] += 1


@numba.njit(cache=True)
def twopass_score(tokens, logp_nn, ent, K, kmin, mask, primes, ctx_tab, full_tab,
                  loo, min_count, a_min, a_max, center, center_step, scale, mults, clip, floor, out):
    """Rescore every target with the complete tables (the seed's full rescore).

    Highest order whose context count >= min_count and whose full count > 0 gives
    ``p_ng = min(full, ctx) / ctx``; ``alpha = clip(mult[order] * (a_min + (a_max - a_min)
    * sigmoid(scale * (H - center + center_step * (order - kmin)))), 0, clip)``;
    ``p = max((1 - alpha) * p_nn + alpha * p_ng, floor)`` (not normalized over the
    vocabulary). With ``loo`` the token's own occurrence is subtracted from both counts
    first, so a full count of 0 backs off to the next lower order.
    Returns [nats, matched tokens, sum of alpha].
    """
    ck = np.zeros(K, np.int64)
    fk = np.zeros(K, np.int64)
    nats = 0.0
    matched = 0.0
    alpha_sum = 0.0
    store = out.shape[0] > 0
    sub = 1 if loo else 0
    for j in range(1, tokens.shape[0]):
        i = j - 1
        top = _order_hashes(tokens, j, K, primes, mask, ck, fk)
        p = np.exp(logp_nn[i])
        for wd in range(top, kmin - 2, -1):
            o = wd + 1 - kmin
            c = np.int64(ctx_tab[o, ck[wd]]) - sub
            if c < min_count:
                continue
            f = np.int64(full_tab[o, fk[wd]]) - sub
            if f <= 0:
                continue
            png = min(f, c) / c
            sig = 1.0 / (1.0 + np.exp(-scale * (ent[i] - center + center_step * o)))
            a = mults[o] * (a_min + (a_max - a_min) * sig)
            if a > clip:
                a = clip
            elif a < 0.0:
                a = 0.0
            p = (1.0 - a) * p + a * png
            matched += 1.0
            alpha_sum += a
            break
        if p < floor:
            p = floor
        nats -= np.log(p)
        if store:
            out[i] = np.log(p)
    res = np.zeros(3)
    res[0] = nats
    res[1] = matched
    res[2] = alpha_sum
    return res


def two_pass_logprobs(tokens, logp, entropy, vocab_size=1024, min_order=2, max_order=12,
                      loo=False, per_token=False, **opts):
    """The seed's full rescore (or its leave-one-out variant); returns nats and statistics."""
    tokens, logp, entropy = np.asarray(tokens), np.asarray(logp), np.asarray(entropy)
    _check_inputs("loo" if loo else "two-pass", tokens, logp, entropy, None, vocab_size, min_order, max_order)
    cfg = {**TWO_PASS_DEFAULTS, **opts}
    unknown = set(opts) - set(TWO_PASS_DEFAULTS)
    if unknown:
        raise NgramError(f"unknown two-pass n-gram option(s): {', '.join(sorted(unknown))}")
    buckets = int(cfg["buckets"])
    if buckets <= 0 or buckets & (buckets - 1):
        raise NgramError(f"two-pass buckets {buckets} must be a positive power of two")
    toks = _token_array(tokens, vocab_size)
    K, n_orders = max_order, max_order - min_order + 1
    mults = np.full(n_orders, float(cfg["high_order_mult"]))
    low = np.asarray(cfg["order_mults"], dtype=np.float64)[:n_orders]
    mults[: len(low)] = low
    primes = np.asarray(SEED_PRIMES, dtype=np.int64)
    mask = np.int64(buckets - 1)
    t0 = time.perf_counter()
    ctx_tab = np.zeros((n_orders, buckets), np.uint32)
    full_tab = np.zeros((n_orders, buckets), np.uint32)
    twopass_build(toks, K, min_order, mask, primes, ctx_tab, full_tab)
    t1 = time.perf_counter()
    out = np.zeros(len(toks) - 1 if per_token else 0)
    r = twopass_score(toks, _float_array(logp), _float_array(entropy),
                      K, min_order, mask, primes, ctx_tab, full_tab, bool(loo), int(cfg["min_count"]),
                           float(cfg["alpha_min"]), float(cfg["alpha_max"]), float(cfg["ent_center"]),
                           float(cfg["ent_center_step"]), float(cfg["ent_scale"]), mults, float(cfg["clip"]),
                           float(cfg["floor"]), out)
    t2 = time.perf_counter()
    n = len(toks) - 1
    res = {"nats_mix": float(r[0]), "match_rate": float(r[1]) / n, "mean_alpha": float(r[2]) / max(float(r[1]), 1.0),
           "table_bytes": ctx_tab.nbytes + full_tab.nbytes, "build_s": t1 - t0, "score_s": t2 - t1}
    if per_token:
        res["logp_mix"] = out
    return res


def evaluate_ngram(mode: str, tokens: np.ndarray, logp: np.ndarray, entropy: np.ndarray, target_bytes: np.ndarray,
                   vocab_size: int = 1024, min_order: int = 2, max_order: int = 12, **opts) -> dict:
    """Blend a neural model's per-target log-probs with an n-gram cache; return the score.

    Returns ``{"mode", "valid", "val_loss" (nats/token), "val_bpb", "orders", "label",
    "timings", ...}``; ``valid`` is true only for ``causal``. ``causal`` adds
    ``ngram_only_loss`` / ``ngram_only_bpb`` (the n-gram without the neural model);
    the hashed modes add ``match_rate`` and ``mean_alpha``. Options: ``progress`` (bool)
    and the keys of :data:`pgolf.eval.ngram.CAUSAL_DEFAULTS` / :data:`TWO_PASS_DEFAULTS`.
    """
    tokens = np.asarray(tokens)
    logp, entropy = np.asarray(logp), np.asarray(entropy)
    target_bytes = np.asarray(target_bytes)
    _check_inputs(mode, tokens, logp, entropy, target_bytes, vocab_size, min_order, max_order)
    n = len(tokens) - 1
    total_bytes = float(np.sum(target_bytes, dtype=np.float64))
    if total_bytes <= 0:
        raise NgramError("target_bytes sums to 0; bits per byte undefined")
    progress = bool(opts.pop("progress", False))
    t0 = time.perf_counter()
    out = {"mode": mode, "valid": mode == "causal", "label": LABELS[mode], "orders": [min_order, max_order],
           "tokens": n, "bytes": total_bytes}
    if mode == "causal":
        r = causal_logprobs(tokens, logp, entropy, vocab_size, min_order, max_order, per_token=False,
                            progress=progress, **opts)
        out["ngram_only_loss"] = r["nats_ng"] / n
        out["ngram_only_bpb"] = r["nats_ng"] / math.log(2) / total_bytes
        out["trie_nodes"], out["memory_bytes"] = r["nodes"], r["trie_bytes"]
        timings = {}
    else:
        r = two_pass_logprobs(tokens, logp, entropy, vocab_size, min_order, max_order, loo=(mode == "loo"), **opts)
        out["match_rate"], out["mean_alpha"], out["memory_bytes"] = r["match_rate"], r["mean_alpha"], r["table_bytes"]
        timings = {"build_s": r["build_s"], "score_s": r["score_s"]}
    elapsed = time.perf_counter() - t0
    out["val_loss"] = r["nats_mix"] / n
    out["val_bpb"] = r["nats_mix"] / math.log(2) / total_bytes
    out["timings"] = {**timings, "total_s": elapsed, "tokens_per_s": n / elapsed if elapsed > 0 else float("inf")}
    return out
