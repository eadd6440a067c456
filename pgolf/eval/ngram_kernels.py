"""Compiled (numba) kernels behind :mod:`pgolf.eval.ngram`; imported on first use only.

The **causal** pass: one left-to-right sweep over a token stream that keeps exact
  n-gram counts in a forward trie (node ids assigned sequentially; a node row holds
  ``count``, ``n_children``, then ``first_end`` while the count is 1 and its first
  child's (token, id) once the count is >= 2 (only then does it have children);
  further children in an open-addressing hash table ``parent_id * V + token -> id``,
  so the common single-continuation case needs no table probe). For each target it
  scores with the counts of tokens before it (interpolated absolute discounting or
  Witten-Bell down to an add-one unigram, mixed with the neural probability by an
  online-learned weight) and only then adds the target to the counts.
  Children of strings seen only once are not stored; when a string's count goes 1 -> 2
  the single child of its first occurrence is materialized from ``first_end + 1``, so
  counts stay exact while the trie holds only repeated strings plus their frontier.
  Updates run from the longest context to the shortest: if a string s reaches count 2
  at t and its first occurrence ended at t-1, the child materialized from that first
  occurrence is the very string the next-longer order extends in this step; doing the
  longer order first (s still had count 1 then, so it stored nothing) counts it once.
The two-pass (seed) kernels live in :mod:`pgolf.eval.ngram_leaky`.

Nothing here validates input; :mod:`pgolf.eval.ngram` does that and owns the state.
"""

from __future__ import annotations

import numba
import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@numba.njit(cache=True, inline="always")
def _probe(table, mask, shift, key):
    """Slot holding ``key`` or the empty slot (key 0) where it would go (linear probing)."""
    s = np.int64((np.uint64(key) * _GOLDEN) >> np.uint64(shift))
    while True:
        k = table[s, 0]
        if k == key or k == 0:
            return s
        s = (s + 1) & mask


@numba.njit(cache=True)
def rehash(old, new, shift):
    """Insert every (key, node) pair of ``old`` into the empty table ``new``."""
    mask = new.shape[0] - 1
    for i in range(old.shape[0]):
        key = old[i, 0]
        if key != 0:
            s = _probe(new, mask, shift, key)
            new[s, 0] = key
            new[s, 1] = old[i, 1]


@numba.njit(cache=True, inline="always")
def _new_node(nodes, n_nodes, first_end):
    nodes[n_nodes, 0] = 1
    nodes[n_nodes, 1] = 0
    nodes[n_nodes, 2] = first_end
    nodes[n_nodes, 3] = -1
    return n_nodes + 1


@numba.njit(cache=True, inline="always")
def _add_child(nodes, table, mask, shift, a, y, V, n_nodes, t):
    """Create node ``a`` + ``y`` (count 1, first end t); returns (child id, keys added).

    A node's first child lives in its own row (columns 2-3), later ones in the table.
    """
    ch = n_nodes
    _new_node(nodes, n_nodes, t)
    added = 0
    if nodes[a, 1] == 0:
        nodes[a, 2] = y
        nodes[a, 3] = ch
    else:
        key = a * V + y
        s = _probe(table, mask, shift, key)
        table[s, 0] = key
        table[s, 1] = ch
        added = 1
    nodes[a, 1] += 1
    return ch, added


@numba.njit(cache=True, inline="always")
def _materialize_first_child(tokens, nodes, node, n_nodes):
    """``node`` just went from count 1 to 2: store the child of its first occurrence
    (its first child, so it goes in the node's own row, not in the table; column 2 stops
    being the first end and becomes that child's token)."""
    p = nodes[node, 2] + 1
    nodes[node, 1] = 1
    nodes[node, 2] = tokens[p]
    nodes[node, 3] = n_nodes
    return _new_node(nodes, n_nodes, p)


@numba.njit(cache=True)
def causal_run(tokens, t0, t1, V, K, ctx_lo, nodes, table, shift, state, active,
               logp_nn, ent, w, ent_width, lr, w_clip, discount, sums,
               out_mix, out_ng, out_lam, node_limit, key_limit):
    """Score targets ``tokens[t0:t1]`` causally; return the first position not processed.

    ``state`` = [n_nodes, n_keys, depth]; ``active[k]`` = node of the length-k context
    ending at t-1 for k < depth (``active[0]`` is the root, depth-1 nodes are ``1 + token``).
    ``discount`` 0 selects Witten-Bell, otherwise absolute discounting by ``discount``.
    ``sums`` accumulates [nats of the mixture, nats of the n-gram alone]. Stops early
    (returning the position reached) when the node or key capacity could be exceeded.
    """
    mask = table.shape[0] - 1
    n_nodes = state[0]
    n_keys = state[1]
    depth = state[2]
    n_eb = w.shape[0]
    store = out_mix.shape[0] > 0
    cnt = np.zeros(K + 1, np.int64)
    tot = np.zeros(K + 1, np.int64)
    dist = np.zeros(K + 1, np.int64)
    slot = np.zeros(K + 1, np.int64)
    child = np.zeros(K + 1, np.int64)
    sink = 0
    s_mix = 0.0
    s_ng = 0.0
    t = t0
    while t < t1:
        if n_nodes + 2 * K + 2 > node_limit or n_keys + 2 * K + 2 > key_limit:
            break
        y = np.int64(tokens[t])
        # m = longest context with count >= 2 (counts shrink with length, so the scoring
        # contexts are exactly 1..m).
        m = depth - 1
        while m > 0 and nodes[active[m], 0] < 2:
            m -= 1
        # Phase 1: find each context's child y in its own row (first child) or issue the
        # hash-table load, for all orders before using any result, so cache misses
        # overlap; phase 2: resolve the table lookups and touch the child rows.
        for k in range(1, m + 1):
            a = active[k]
            if nodes[a, 2] == y:
                child[k] = nodes[a, 3]
                sink += nodes[child[k], 0]
            elif nodes[a, 1] >= 2:
                child[k] = -2
                slot[k] = np.int64((np.uint64(a * V + y) * _GOLDEN) >> np.uint64(shift))
                sink += table[slot[k], 0]
            else:
                child[k] = -1
        for k in range(1, m + 1):
            if child[k] == -2:
                key = active[k] * V + y
                s = _probe(table, mask, shift, key)
                if table[s, 0] == key:
                    child[k] = table[s, 1]
                    sink += nodes[child[k], 0]
                else:
                    child[k] = -1
        # Phase 3, longest context first (see module docstring): record pre-update
        # statistics, then add the target.
        for k in range(m, 0, -1):
            a = active[k]
            tot[k] = nodes[a, 0] - 1
            dist[k] = nodes[a, 1]
            ch = child[k]
            if ch >= 0:
                c = nodes[ch, 0]
                cnt[k] = c
                nodes[ch, 0] = c + 1
                if c == 1 and k + 1 < K:
                    n_nodes = _materialize_first_child(tokens, nodes, ch, n_nodes)
            else:
                cnt[k] = 0
                ch, added = _add_child(nodes, table, mask, shift, a, y, V, n_nodes, t)
                n_nodes += 1
                n_keys += added
            if k + 1 < K:
                active[k + 1] = ch
        # The root (unigram, add-one over the t tokens before t).
        leaf = 1 + y
        cu = nodes[leaf, 0]
        p = (cu + 1.0) / (t + V)
        nodes[leaf, 0] = cu + 1
        if cu == 0:
            nodes[leaf, 2] = t
        elif cu == 1 and K > 1:
            n_nodes = _materialize_first_child(tokens, nodes, leaf, n_nodes)
        if K > 1:
            active[1] = leaf
        depth = min(m + 2, K)
        # Interpolate from the shortest used context to the longest: Witten-Bell
        # (discount 0) or absolute discounting (0 < discount <= 1).
        deepest = 0
        for k in range(ctx_lo, m + 1):
            if discount > 0.0:
                p = (max(cnt[k] - discount, 0.0) + discount * dist[k] * p) / tot[k]
            else:
                p = (cnt[k] + dist[k] * p) / (tot[k] + dist[k])
            deepest = k
        # Neural / n-gram mixture with a weight learned online from past tokens only.
        i = t - 1
        pn = np.exp(logp_nn[i])
        e = int(ent[i] / ent_width)
        if e < 0:
            e = 0
        elif e >= n_eb:
            e = n_eb - 1
        wv = w[e, deepest]
        lam = 1.0 / (1.0 + np.exp(-wv))
        pm = (1.0 - lam) * pn + lam * p
        lpm = np.log(pm)
        lpg = np.log(p)
        s_mix -= lpm
        s_ng -= lpg
        if store:
            out_mix[i] = lpm
            out_ng[i] = lpg
            out_lam[i] = lam
        wv += lr * (p - pn) / pm * lam * (1.0 - lam)
        if wv > w_clip:
            wv = w_clip
        elif wv < -w_clip:
            wv = -w_clip
        w[e, deepest] = wv
        t += 1
    state[0] = n_nodes
    state[1] = n_keys
    state[2] = depth
    state[3] = sink  # keeps the prefetch loads from being optimized away
    sums[0] += s_mix
    sums[1] += s_ng
    return t
