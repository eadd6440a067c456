"""Training throughput of a preset on this device: tokens/s and ms per optimizer step.

Runs the real training step (Trainer.step: accumulation, gradient averaging, clipping,
Muon + AdamW, EMA) after warm-up steps (torch.compile on CUDA) and prints a table.
Defaults: CPU → preset ``tiny``; CUDA → preset ``seed`` (786,432 tokens per step through
gradient accumulation). Token content does not matter for speed, so without ``--data``
random shards are written to a temporary folder. When ``pgolf.quant.schemes.qat`` is available
and the preset enables QAT, a second row measures the 2-bit QAT phase. Run::

    python benchmarks/train_throughput.py                       # tiny on CPU / seed on GPU
    python benchmarks/train_throughput.py --preset seed --steps 10 --set micro_batch_seqs=24

Numbers are measured, never asserted; on a shared machine they are pessimistic.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def random_data(folder: Path, vocab: int, tokens: int) -> Path:
    from pgolf.data.shards import write_shard

    rng = np.random.default_rng(0)
    write_shard(folder / "fineweb_train_000000.bin", rng.integers(0, vocab, tokens))
    write_shard(folder / "fineweb_val_000000.bin", rng.integers(0, vocab, 4096))
    return folder


def median_step_ms(tr, steps: int, lr_scale: float) -> float:
    """Median wall time (ms) of ``steps`` calls of ``tr.step`` (synchronized on CUDA)."""
    import torch

    device = tr.env.device

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times = []
    for _ in range(steps):
        sync()
        t0 = time.perf_counter()
        tr.step(lr_scale, tr.cfg.train.muon_momentum)
        sync()
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def measure(cfg, data, steps: int, warmup: int, lr_scale: float) -> dict:
    import torch

    from pgolf.train import distributed as du
    from pgolf.train.trainer import Trainer, flops_per_token, peak_flops

    env = du.setup(cfg.train.device, cfg.train.threads)
    tr = Trainer(cfg, data, env)
    tr.warmup(warmup)
    ms = median_step_ms(tr, steps, lr_scale)
    tps = cfg.train.batch_tokens / (ms / 1000)
    peak = peak_flops(env.device)
    row = {"device": torch.cuda.get_device_name(env.device) if env.device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads",
           "tokens/step": cfg.train.batch_tokens, "accum": tr.loader.accum, "ms/step": ms, "tokens/s": tps,
           "mfu": tps * flops_per_token(tr.model, cfg) / peak if peak else None}
    du.teardown(env)
    return row


def main(argv=None) -> int:
    import torch

    from pgolf.presets import resolve_config

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default=None, help="default: seed on CUDA, tiny on CPU")
    ap.add_argument("--data", help="data folder (default: random shards in a temp folder)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 10 on GPU, 5 on CPU)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed warm-up steps (default 3 on GPU, 1 on CPU)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    preset = args.preset or ("seed" if cuda else "tiny")
    steps = args.steps or (10 if cuda else 5)
    warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    base = resolve_config(preset, args.sets)
    has_qat = importlib.util.find_spec("pgolf.quant.schemes.qat") is not None
    variants = [("qat off", ["qat=false"], 1.0)]
    if base.train.qat and has_qat:
        variants.append(("qat 2-bit phase", ["qat=true"], 0.1))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or random_data(Path(tmp), base.model.vocab_size, max(4 * base.train.batch_tokens, 200_000))
        for name, extra, lr in variants:
            cfg = resolve_config(preset, args.sets + extra)
            print(f"measuring {preset} ({name}): {warmup} warm-up + {steps} timed steps ...", file=sys.stderr, flush=True)
            rows.append({"preset": preset, "variant": name, **measure(cfg, data, steps, warmup, lr)})
    head = ["preset", "variant", "device", "tokens/step", "accum", "ms/step", "tokens/s", "mfu"]
    fmt = {"ms/step": "{:.1f}", "tokens/s": "{:,.0f}", "tokens/step": "{:,}", "mfu": "{:.1%}"}
    cells = [[("-" if r[h] is None else fmt.get(h, "{}").format(r[h])) for h in head] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for c in cells:
        print("| " + " | ".join(v.ljust(w) for v, w in zip(c, widths)) + " |")
    if len(rows) == 2:
        print(f"QAT-on / QAT-off tokens/s: {rows[1]['tokens/s'] / rows[0]['tokens/s']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
