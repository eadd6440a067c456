"""Speed and memory of the n-gram evaluation modes (pgolf.eval.ngram); prints a table.

    python benchmarks/ngram_speed.py                       # val shard + 62M synthetic, all modes
    python benchmarks/ngram_speed.py --modes causal --tokens 62000000 --datasets synthetic
    python benchmarks/ngram_speed.py --synthetic docs      # repeated-document stress stream

Datasets:
* ``val``: the shared development validation shard (``../shared/data``, 663K tokens).
* ``synthetic``: a ``--tokens``-long stream (default 62,000,000, the size of the full
  FineWeb validation split). ``--synthetic markov`` (default) samples an order-2 Markov
  chain fit on the shared train shards (each next token is the follower of a uniformly
  random earlier occurrence of the last two tokens in the training text — exact sampling
  from the empirical trigram distribution, so phrases of the training text recur the way
  boilerplate recurs in web text); ``--synthetic docs`` concatenates the train shards'
  documents in shuffled order, repeated until long enough (every document ~7 times: a
  worst case for memory, far more repetitive than FineWeb).

Neural inputs are synthetic: a bigram model fit on the train shards (add-0.5) gives each
target's log-probability and the entropy of its predicted distribution. Bytes per target
come from the official tokenizer's byte tables. Each (dataset, mode) runs in its own
process so the peak resident memory (``VmHWM``, which includes the inputs: tokens
uint16, log-probs and entropies float32) belongs to that mode alone; numba compilation is
excluded by a warm-up call. Timings depend on machine load; the table header prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))


def _train_tokens(data_dir: Path) -> np.ndarray:
    from pgolf.data.shards import read_shard

    files = sorted(data_dir.glob("fineweb_train_*.bin"))
    if not files:
        sys.exit(f"no fineweb_train_*.bin in {data_dir}")
    return np.concatenate([np.asarray(read_shard(f)) for f in files]).astype(np.uint16)


def _markov_stream(train: np.ndarray, n: int, V: int, seed: int) -> np.ndarray:
    import numba

    keys = train[:-2].astype(np.int64) * V + train[1:-1]
    order = np.argsort(keys, kind="stable")
    offsets = np.zeros(V * V + 1, np.int64)
    np.cumsum(np.bincount(keys, minlength=V * V), out=offsets[1:])

    @numba.njit(cache=False)
    def sample(train, order, offsets, n, V, seed):
        np.random.seed(seed)
        out = np.empty(n, np.uint16)
        i = np.random.randint(0, len(train) - 2)
        out[0], out[1] = train[i], train[i + 1]
        for j in range(2, n):
            key = np.int64(out[j - 2]) * V + out[j - 1]
            lo, hi = offsets[key], offsets[key + 1]
            if hi == lo:  # context never followed in training text: restart anywhere
                out[j] = train[np.random.randint(0, len(train))]
            else:
                out[j] = train[order[lo + np.random.randint(0, hi - lo)] + 2]
        return out

    return sample(train, order, offsets, n, V, seed)


def _docs_stream(train: np.ndarray, n: int, seed: int) -> np.ndarray:
    starts = np.flatnonzero(train == 1)
    docs = np.split(train, starts[1:]) if len(starts) else [train]
    rng = np.random.default_rng(seed)
    parts, total = [], 0
    while total < n:
        for i in rng.permutation(len(docs)):
            parts.append(docs[i])
            total += len(docs[i])
    return np.concatenate(parts)[:n]


def _neural_inputs(tokens: np.ndarray, train: np.ndarray, V: int):
    """Bigram 'neural model' from the train shards: (logp, entropy) per target, float32."""
    counts = np.bincount(train[:-1].astype(np.int64) * V + train[1:], minlength=V * V).reshape(V, V) + 0.5
    probs = counts / counts.sum(1, keepdims=True)
    logq = np.log(probs)
    ent_row = -(probs * logq).sum(1)
    prev, tgt = tokens[:-1].astype(np.int64), tokens[1:].astype(np.int64)
    return logq[prev, tgt].astype(np.float32), ent_row[prev].astype(np.float32)


def _target_bytes(tokens: np.ndarray, tokenizer: Path) -> np.ndarray:
    if not tokenizer.is_file():
        return np.ones(len(tokens) - 1, np.float32)
    from pgolf.data.tokenizer import byte_tables

    return byte_tables(tokenizer).target_bytes(tokens[1:], tokens[:-1]).astype(np.float32)


def _prepare(name: str, tokens: np.ndarray, train: np.ndarray, tokenizer: Path, out: Path) -> Path:
    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    logp, ent = _neural_inputs(tokens, train, 1024)
    np.save(d / "tokens.npy", tokens)
    np.save(d / "logp.npy", logp)
    np.save(d / "entropy.npy", ent)
    np.save(d / "bytes.npy", _target_bytes(tokens, tokenizer))
    return d


def _peak_rss_bytes() -> int:
    """This process's peak resident memory: VmHWM (per address space, so a fresh child
    does not inherit its parent's peak the way ``ru_maxrss`` does on Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _child(mode: str, d: str, lo: int, hi: int) -> None:
    """Run one mode on one prepared dataset; print one JSON line."""
    from pgolf.eval.ngram import evaluate_ngram

    arrays = [np.load(Path(d) / f) for f in ("tokens.npy", "logp.npy", "entropy.npy", "bytes.npy")]
    warm = [a[:2000] for a in arrays]
    evaluate_ngram(mode, warm[0], warm[1][:1999], warm[2][:1999], warm[3][:1999], min_order=lo, max_order=hi,
                   **({"buckets": 1 << 12} if mode != "causal" else {}))
    t0, c0 = time.perf_counter(), time.process_time()
    res = evaluate_ngram(mode, *arrays, min_order=lo, max_order=hi)
    res["wall_s"], res["cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
    res["neural_bpb"] = float(-np.sum(arrays[1], dtype=np.float64) / np.log(2) / np.sum(arrays[3], dtype=np.float64))
    res["peak_rss_bytes"] = _peak_rss_bytes()
    print(json.dumps(res))


def _run(mode: str, d: Path, lo: int, hi: int, timeout: int) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, str(d), f"{lo}-{hi}"]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"mode": mode, "error": f"timed out after {timeout}s"}
    if p.returncode != 0:
        return {"mode": mode, "error": (p.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def _row(ds: str, r: dict) -> str:
    if "error" in r:
        return f"| {ds} | {r['mode']} | error: {r['error']} |"
    gib = 1 << 30
    ng = f"{r['ngram_only_bpb']:.4f}" if "ngram_only_bpb" in r else "-"
    return (f"| {ds} | {r['tokens']:,} | {r['mode']} | {r['orders'][0]}-{r['orders'][1]} | {r['neural_bpb']:.4f} | "
            f"{r['val_bpb']:.4f} | {r['label']} | {ng} | {r['tokens'] / r['wall_s']:,.0f} | "
            f"{r['tokens'] / r['cpu_s']:,.0f} | {r['wall_s']:.1f} | "
            f"{r['peak_rss_bytes'] / gib:.2f} | {r['memory_bytes'] / gib:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--modes", default="causal,two-pass,loo", help="comma list of causal,two-pass,loo")
    ap.add_argument("--datasets", default="val,synthetic", help="comma list of val,synthetic")
    ap.add_argument("--tokens", type=int, default=62_000_000, help="length of the synthetic stream")
    ap.add_argument("--synthetic", choices=("markov", "docs"), default="markov", help="how to make the synthetic stream")
    ap.add_argument("--orders", default="2-12", help="MIN-MAX n-gram orders")
    ap.add_argument("--data", type=Path, default=SHARED, help="folder with fineweb_sp1024/ and tokenizers/")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per (dataset, mode) run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        lo, hi = (int(x) for x in a.child[2].split("-"))
        return _child(a.child[0], a.child[1], lo, hi)
    lo, hi = (int(x) for x in a.orders.split("-"))
    shards, tok_model = a.data / "fineweb_sp1024", a.data / "tokenizers" / "fineweb_1024_bpe.model"
    train = _train_tokens(shards)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ngram_speed_") as tmp:
        datasets = {}
        for ds in a.datasets.split(","):
            t0 = time.perf_counter()
            if ds == "val":
                from pgolf.data.shards import read_shard

                toks = np.asarray(read_shard(shards / "fineweb_val_000000.bin")).astype(np.uint16)
            elif ds == "synthetic":
                toks = (_markov_stream(train, a.tokens, 1024, a.seed) if a.synthetic == "markov"
                        else _docs_stream(train, a.tokens, a.seed))
                ds = f"synthetic-{a.synthetic}"
            else:
                sys.exit(f"unknown dataset {ds!r}")
            datasets[ds] = _prepare(ds, toks, train, tok_model, Path(tmp))
            print(f"prepared {ds}: {len(toks):,} tokens in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
            del toks
        for ds, d in datasets.items():
            for mode in a.modes.split(","):
                r = _run(mode, d, lo, hi, a.timeout)
                rows.append(_row(ds, r))
                print(rows[-1], file=sys.stderr, flush=True)
    load = os.getloadavg()
    print(f"\nn-gram evaluation speed ({os.cpu_count()} CPUs, load average {load[0]:.1f}/{load[1]:.1f} at the end; "
          f"single-threaded kernels; other jobs may share the machine: 'CPU time' divides by the process's own "
          f"CPU seconds, 'wall' by elapsed seconds)\n")
    print("| dataset | tokens | mode | orders | neural bpb | val_bpb | label | n-gram-only bpb | tokens/s (wall) "
          "| tokens/s (CPU time) | wall s | peak RSS GiB | tables GiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
