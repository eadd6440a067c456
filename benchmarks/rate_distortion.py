"""Rate-distortion of the quantizers on one float model: val_bpb penalty vs artifact bytes.

For one trained float model (``--run RUN_DIR``; by default a ``tiny`` run trained once
here without QAT and cached under ``--cache``), the script collects the GPTQ Hessians
once (``--calib-batches`` training batches, time reported), then quantizes with

* ``record`` with its matrices at 4, 5 and 6 bits (embeddings one bit more, as the
  record's int6/int7) and the record's clip widths k; each gives a byte target ``B_b``;
* ``record-ksearch`` at 4 and 5 bits: k chosen per tensor by Hessian-weighted error
  (``quant.record_k_search``), the stronger low-width variant (its bytes stay near int6's);
* ``turbo-rd`` at ``--target-bytes B_b`` for each of those targets;
* ``turbo`` (seed TurboQuant, LZMA) at uniform widths 2..6 bits, as its own curve;

decodes every artifact exactly as evaluation does and scores it on the same first
``--val-tokens`` (>= 262,144) validation tokens with the standard (non-overlapping)
evaluation. Writes ``rate_distortion.csv`` and ``rate_distortion.png`` (penalty vs
artifact bytes, one curve per scheme) under ``--out`` and prints a Markdown table and
the acceptance check (turbo-rd penalty <= 0.8x record's at record-4-bit bytes; never
worse at any target). Timings on a shared CPU are not meaningful. Run::

    flock /tmp/pgolf-cpu.lock python benchmarks/rate_distortion.py            # trains the tiny model once
    python benchmarks/rate_distortion.py --run runs/tiny --out runs/rd
    python benchmarks/rate_distortion.py --seed-run /tmp/seed0   # then: pgolf quantize /tmp/seed0 --scheme turbo-rd --calib-batches 0
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
MIN_VAL_TOKENS = 262_144


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", help="trained run dir (config.json + model.pt); default: the cached tiny run")
    p.add_argument("--cache", default=str(Path.home() / ".cache" / "pgolf" / "rd_tiny"),
                   help="where the default tiny run is trained once and reused")
    p.add_argument("--train-seconds", type=float, default=270.0, help="wall-clock of the default tiny run")
    p.add_argument("--data", default=str(DATA / "fineweb_sp1024"), help="shard folder (train + val)")
    p.add_argument("--tokenizer", default=str(DATA / "tokenizers" / "fineweb_1024_bpe.model"))
    p.add_argument("--out", default=str(REPO / "runs" / "rate_distortion"), help="folder for the csv and png")
    p.add_argument("--val-tokens", type=int, default=MIN_VAL_TOKENS, help=f"validation tokens scored (>= {MIN_VAL_TOKENS:,})")
    p.add_argument("--calib-batches", type=int, default=16, help="training batches for the GPTQ Hessians")
    p.add_argument("--record-bits", type=int, nargs="+", default=[4, 5, 6], help="record matrix widths (byte targets)")
    p.add_argument("--turbo-bits", type=int, nargs="+", default=[2, 3, 4, 5, 6], help="uniform widths of the turbo curve")
    p.add_argument("--seed-run", metavar="DIR",
                   help="only write a randomly initialised seed-preset run (every matrix non-zero) to DIR for "
                        "the budget-fill check: pgolf quantize DIR --scheme turbo-rd --calib-batches 0")
    return p.parse_args(argv)


def write_seed_run(out: Path) -> int:
    """A seed-preset run dir with random weights (zero-initialised matrices made N(0, 0.02))."""
    import json

    import torch

    from pgolf.model.gpt import GPT
    from pgolf.presets import get_preset

    cfg = get_preset("seed")
    torch.manual_seed(cfg.train.seed)
    sd = GPT(cfg.model).state_dict()
    g = torch.Generator().manual_seed(0)
    sd = {k: (torch.randn(v.shape, generator=g) * 0.02 if v.dim() == 2 and not v.any() else v) for k, v in sd.items()}
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    torch.save(sd, out / "model.pt")
    print(f"wrote {out} ({sum(v.numel() for v in sd.values()):,} parameters)")
    return 0


def default_run(args) -> Path:
    """The cached tiny float run (qat off), trained on first use."""
    out = Path(args.cache)
    if (out / "model.pt").is_file():
        print(f"reusing {out}", flush=True)
        return out
    from pgolf.presets import resolve_config
    from pgolf.train.trainer import train

    cfg = resolve_config("tiny", ["train.qat=false", "train.device=cpu",
                                  f"max_wallclock_seconds={args.train_seconds}"])
    print(f"training {out} (tiny, qat off, {args.train_seconds:.0f} s) ...", flush=True)
    train(cfg, args.data, args.tokenizer, out)
    return out


def bpb_of(cfg, sd, tokens, tables) -> float:
    from pgolf.model.bpb import evaluate
    from pgolf.model.gpt import GPT

    model = GPT(cfg.model)
    model.load_state_dict(sd)
    return evaluate(model, tokens, tables, seq_len=cfg.train.seq_len, batch_seqs=32, progress=False).bpb


def quantize(cfg, sd, scheme, calib, overrides=None, target=None, k_search=False):
    """(decoded state_dict, artifact bytes, params); decode checked against the reference."""
    import copy

    from pgolf.quant.format.artifact import build_artifact, decode

    c = copy.deepcopy(cfg)
    c.quant.scheme, c.quant.record_k_search = scheme, k_search
    facts = {}
    data, ref, rows = build_artifact(sd, c, None, overrides, calib=calib, target_bytes=target, facts=facts)
    out, _ = decode(data)
    if not all(out[k].equal(ref[k]) for k in ref):
        raise RuntimeError(f"{scheme}: decode differs from the reference")
    return out, len(data), sum(r["numel"] for r in rows)


def measure(args, cfg, sd, calib, tokens, tables) -> list[dict]:
    fp = bpb_of(cfg, sd, tokens, tables)
    print(f"float val_bpb {fp:.4f} on {len(tokens) - 1:,} tokens", flush=True)
    rows = []

    def add(scheme, label, target, res):
        t = time.time()
        bpb = bpb_of(cfg, res[0], tokens, tables)
        rows.append({"scheme": scheme, "setting": label, "target_bytes": target or "", "artifact_bytes": res[1],
                     "bits_per_param": 8.0 * res[1] / res[2], "float_bpb": fp, "quant_bpb": bpb, "penalty": bpb - fp})
        print(f"  {scheme} {label}: {res[1]:,} B, bpb {bpb:.4f} ({bpb - fp:+.4f}) [{time.time() - t:.0f}s]", flush=True)

    targets = {}
    for b in args.record_bits:
        over = {"attn": b, "proj": b, "mlp_up": b, "mlp_down": b, "embed": min(8, b + 1)}
        res = quantize(cfg, sd, "record", calib, over)
        targets[b] = res[1]
        add("record", f"int{b} (embed int{min(8, b + 1)})", None, res)
    for b in [b for b in args.record_bits if b < 6]:
        over = {"attn": b, "proj": b, "mlp_up": b, "mlp_down": b, "embed": min(8, b + 1)}
        add("record-ksearch", f"int{b}, k by error", None, quantize(cfg, sd, "record", calib, over, k_search=True))
    for b, target in targets.items():
        add("turbo-rd", f"target = record int{b}", target, quantize(cfg, sd, "turbo-rd", calib, target=target))
    for b in args.turbo_bits:
        over = {r: b for r in ("attn", "proj", "mlp_up", "mlp_down", "embed")}
        add("turbo", f"{b}-bit", None, quantize(cfg, sd, "turbo", None, over))
    return rows


def write_outputs(rows, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "rate_distortion.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for scheme in dict.fromkeys(r["scheme"] for r in rows):
        pts = sorted((r["artifact_bytes"], r["penalty"]) for r in rows if r["scheme"] == scheme)
        ax.plot([p[0] / 1e6 for p in pts], [p[1] for p in pts], marker="o", label=scheme)
    ax.set_xlabel("artifact bytes (MB)")
    ax.set_ylabel("val_bpb penalty vs float")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "rate_distortion.png", dpi=120)
    print(f"wrote {out / 'rate_distortion.csv'} and {out / 'rate_distortion.png'}")


def report(rows) -> bool:
    print("\n| scheme | setting | artifact bytes | bits/param | float bpb | quantized bpb | penalty |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['scheme']} | {r['setting']} | {r['artifact_bytes']:,} | {r['bits_per_param']:.3f} | "
              f"{r['float_bpb']:.4f} | {r['quant_bpb']:.4f} | {r['penalty']:+.4f} |")
    rec = [r for r in rows if r["scheme"] == "record"]
    rd = [r for r in rows if r["scheme"] == "turbo-rd"]
    ok = True
    for a, b in zip(rec, rd):
        ratio = b["penalty"] / a["penalty"] if a["penalty"] > 0 else float("inf")
        print(f"at {a['artifact_bytes']:,} B ({a['setting']}): turbo-rd {b['artifact_bytes']:,} B penalty "
              f"{b['penalty']:+.4f} vs record {a['penalty']:+.4f} (ratio {ratio:.2f})")
        ok &= b["penalty"] <= a["penalty"]
    first = rd[0]["penalty"] <= 0.8 * rec[0]["penalty"] if rec and rd else False
    print(f"claim: turbo-rd <= 0.8x record at {rec[0]['setting'] if rec else '?'}: {first}; never worse: {ok}")
    return first and ok


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO))
    if args.seed_run:
        return write_seed_run(Path(args.seed_run))
    from pgolf.data.loader import load_val_tokens
    from pgolf.data.tokenizer import byte_tables
    from pgolf.quant.calibrate.hessian import calibrate
    from pgolf.quant.quantize import load_run

    if args.val_tokens < MIN_VAL_TOKENS:
        print(f"--val-tokens must be >= {MIN_VAL_TOKENS:,}", file=sys.stderr)
        return 1
    if not Path(args.data).is_dir():
        print(f"no data at {args.data}; pass --data", file=sys.stderr)
        return 1
    run_dir = Path(args.run) if args.run else default_run(args)
    cfg, sd = load_run(run_dir)
    tables = byte_tables(args.tokenizer)
    tokens = load_val_tokens(args.data, cfg.train.seq_len)[: args.val_tokens + 1]
    calib = calibrate(cfg, sd, args.data, args.calib_batches)
    print(f"run {run_dir}: calibration {args.calib_batches} batches, {calib.tokens:,} tokens, "
          f"{calib.seconds:.1f} s", flush=True)
    rows = measure(args, cfg, sd, calib, tokens, tables)
    write_outputs(rows, Path(args.out))
    report(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
