"""Score-first TTT speed on this machine: sliding vs lora vs phased on the same validation tokens.

For a trained run (``--run RUN_DIR``) or, without one, the record preset at reduced width
(``--width``, random weights: speed only, the bpb column is then meaningless), it times
the sliding-window evaluation (stride ``--stride``), document-batched LoRA TTT and phased
TTT (pgolf.eval.ttt_docs) on the first ``--max-tokens`` validation tokens, the methods run
as ``pgolf eval`` runs them (in a process of their own, its start and end inside their
time; ``--ttt-in-process``: in this one), and prints per
mode: seconds, tokens/s, time relative to sliding, forward-equivalents per target
(tokens through the model, probes included, over targets) and val_bpb. Then, for the
documents of that prefix, the sequential chunk steps per rank on ``--ranks`` ranks, and
the projection for 47.85M tokens / 50K documents (the record's SP8192 validation) on
8xH100: counted FLOPs at an assumed 30% of bf16 peak plus sequential steps x
``--step-overhead-ms`` (an assumption until a GPU measures it; the CPU's own per-step
time is printed beside it). Everything is an estimate and labelled so.

    python benchmarks/ttt_speed.py --run runs/tiny --data ../shared/data/fineweb_sp1024 --max-tokens 200000
    python benchmarks/ttt_speed.py --data ../shared/data/fineweb_sp1024 --width 128 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RECORD_TOKENS, RECORD_DOCS = 47_850_000, 50_000


def _model_and_cfg(args):
    from pgolf.config import set_field
    from pgolf.model.gpt import GPT
    from pgolf.presets import get_preset

    if args.run:
        from pgolf.eval.loading import load_for_eval

        loaded = load_for_eval(args.run)
        return loaded.model.eval(), loaded.cfg, False
    cfg = get_preset("record")
    heads = max(1, args.width // 64)
    for k, v in dict(model_dim=args.width, num_heads=heads, num_kv_heads=max(1, heads // 2), vocab_size=1024).items():
        set_field(cfg, f"model.{k}", v)
    set_field(cfg, "train.seq_len", args.seq_len)
    set_field(cfg, "ttt.lora_rank", max(1, args.width * 80 // 512))  # the record's rank, scaled with width
    torch.manual_seed(0)
    return GPT(cfg.model).eval(), cfg, True


def _time(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _modes(model, cfg, tokens, tables, seq_len, args):
    from pgolf.eval.ttt import run_method
    from pgolf.model.bpb import evaluate, val_stream

    stream = val_stream(tokens, seq_len)
    n = len(stream) - 1
    rows = {}
    res, s = _time(lambda: evaluate(model, tokens, tables, seq_len=seq_len, stride=args.stride, progress=False,
                                    batch_seqs=args.batch))
    rows["sliding"] = {"seconds": s, "bpb": res.bpb, "fwd_per_target": seq_len / args.stride}
    for mode in ("lora", "phased"):
        # as pgolf eval runs it: the method in a process of its own (unless --ttt-in-process), start inside the time
        (r, trained, _), s = _time(lambda: run_method(mode, model, stream, cfg, seq_len, args.batch, torch.device("cpu")))
        nats = -float(np.sum(r.logp))
        rows[mode] = {"seconds": s, "bpb": nats / math.log(2) / float(res.bytes), "fwd_per_target": r.forward_tokens / n,
                      "chunk_calls": r.chunks, "trained_tokens": trained}
    for v in rows.values():
        v["tokens_per_s"] = n / v["seconds"]
        v["vs_sliding"] = v["seconds"] / rows["sliding"]["seconds"]
    return rows, stream


def _steps_per_rank(doc_lengths, chunk: int, batch: int, ranks: int) -> int:
    """Sequential chunk steps of the busiest rank: batches (longest first) dealt round-robin."""
    order = sorted(doc_lengths, reverse=True)
    steps = [0] * ranks
    for i in range(0, len(order), batch):
        steps[(i // batch) % ranks] += math.ceil(order[i] / chunk)
    return max(steps)


def _step_overhead_cpu(model, cfg, seq_len) -> float:
    """Seconds of one document-batched step on a 1-document, 2-token batch (this machine)."""
    from pgolf.eval.ttt_docs import BatchedLora

    method = BatchedLora(model, cfg.ttt, seq_len)
    method.start([1])
    x, y = torch.tensor([[1, 5]]), torch.tensor([[7, 9]])
    with method.hooks():
        for _ in range(3):
            method.train(method.logits(x), y)
        t0 = time.perf_counter()
        for _ in range(20):
            method.train(method.logits(x), y)
    return (time.perf_counter() - t0) / 20


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", help="a trained run directory (default: the record preset at --width, random weights)")
    p.add_argument("--data", required=True, help="data directory with fineweb_val_*.bin and tokenizer.model")
    p.add_argument("--tokenizer", default=None, help="SentencePiece model (default: DATA/tokenizer.model or the run's)")
    p.add_argument("--max-tokens", type=int, default=100_000, help="validation tokens to score (default 100000)")
    p.add_argument("--width", type=int, default=128, help="model_dim of the reduced record model (default 128)")
    p.add_argument("--seq-len", type=int, default=256, help="window of the reduced record model (default 256)")
    p.add_argument("--stride", type=int, default=64, help="sliding-window stride (default 64)")
    p.add_argument("--batch", type=int, default=16, help="windows / documents per forward (default 16)")
    p.add_argument("--ranks", type=int, default=8, help="ranks for the sequential-steps count (default 8)")
    p.add_argument("--step-overhead-ms", type=float, default=3.0,
                   help="assumed per-step overhead on an H100 for the projection (default 3 ms; not measured)")
    p.add_argument("--phase-docs", default=None, help="override ttt.phase_docs, e.g. 4,8,12")
    p.add_argument("--ttt-in-process", action="store_true",
                   help="run the TTT methods in this process (default: a process of their own, as pgolf eval does)")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    if args.ttt_in_process:
        os.environ["PGOLF_TTT_IN_PROCESS"] = "1"  # read by pgolf.eval.isolate.in_process
    from pgolf.data.shards import load_tokens
    from pgolf.data.tokenizer import byte_tables
    from pgolf.eval.isolate import in_process
    from pgolf.eval.timing import projection

    torch.set_grad_enabled(True)
    model, cfg, reduced = _model_and_cfg(args)
    if args.phase_docs:
        from pgolf.config import set_field

        set_field(cfg, "ttt.phase_docs", args.phase_docs)  # the --set parser: same syntax and errors
    seq_len = cfg.train.seq_len if not reduced else args.seq_len
    tok = args.tokenizer or (Path(args.data) / "tokenizer.model")
    if not Path(tok).is_file() and args.run:
        tok = json.loads((Path(args.run) / "config.json").read_text())["tokenizer"]
    tables = byte_tables(str(tok))
    tokens = load_tokens(args.data, "val")[: args.max_tokens]
    rows, stream = _modes(model, cfg, tokens, tables, seq_len, args)
    from pgolf.eval.stream import units_of

    lengths = [e - s for s, e in units_of(stream, 1)]
    chunk = min(cfg.ttt.chunk_tokens, seq_len)
    steps_here = _steps_per_rank(lengths, chunk, args.batch, args.ranks)
    scale = RECORD_DOCS / len(lengths)
    steps_record = _steps_per_rank(lengths * max(1, round(scale)), chunk, 64, 8)
    cpu_step = _step_overhead_cpu(model, cfg, seq_len)
    trained_per_target = rows["phased"]["trained_tokens"] / (len(stream) - 1)
    proj = projection(model, seq_len, int(rows["phased"]["fwd_per_target"] * RECORD_TOKENS),
                      int(trained_per_target * RECORD_TOKENS), steps=steps_record,
                      step_overhead_s=args.step_overhead_ms / 1e3)
    print(f"model: {'reduced record, width ' + str(args.width) + ' (random weights: bpb meaningless)' if reduced else args.run}; "
          f"{len(stream) - 1:,} targets, {len(lengths)} documents, seq_len {seq_len}, chunk {chunk}, batch {args.batch}, "
          f"LoRA rank {cfg.ttt.lora_rank}, phases at {list(cfg.ttt.phase_docs)} documents; TTT methods "
          f"{'in this process' if in_process() else 'in a process of their own (start included in their time)'}")
    print(f"{'mode':8s} {'seconds':>9s} {'tok/s':>9s} {'vs sliding':>10s} {'fwd/target':>10s} {'val_bpb':>8s}")
    for mode, v in rows.items():
        print(f"{mode:8s} {v['seconds']:9.2f} {v['tokens_per_s']:9.0f} {v['vs_sliding']:10.2f} "
              f"{v['fwd_per_target']:10.2f} {v['bpb']:8.4f}")
    print(f"sequential chunk steps per rank here ({args.ranks} ranks): {steps_here:,}; "
          f"for {RECORD_DOCS:,} documents of this length distribution, 64 per batch, 8 ranks: {steps_record:,}")
    print(f"per-step time on this CPU (1 document, 2 tokens): {cpu_step * 1e3:.1f} ms")
    print(f"projection (estimate) for {RECORD_TOKENS:,} tokens on 8xH100, phased: "
          f"{proj['projected_8xh100_s']:.0f} s = FLOPs {proj['flops']:.3g} at the assumed utilization + "
          f"{steps_record:,} steps x {args.step_overhead_ms:g} ms (assumed; a GPU measurement is owed); "
          f"trained tokens {trained_per_target:.2f} per target as measured here")
    if args.json:
        Path(args.json).write_text(json.dumps({"modes": rows, "documents": len(lengths), "steps_per_rank": steps_here,
                                               "steps_per_rank_record": steps_record, "cpu_step_s": cpu_step,
                                               "projection": proj, "reduced": reduced,
                                               "isolated": not in_process()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
