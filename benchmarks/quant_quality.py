"""Post-quantization quality: val_bpb penalty per scheme, and reconstruction MSE per bit width.

For a trained checkpoint (``--run RUN_DIR``; by default a short ``tiny`` run is trained
here on ../shared/data) and, for "turbo + QAT", a second run trained with
``train.qat=true`` (``--qat-run``; trained here by default), this script quantizes the
weights with each scheme, decodes them exactly as evaluation does, and measures val_bpb
with :func:`pgolf.model.bpb.evaluate` (standard windows, on the first ``--val-tokens``
validation tokens). Schemes: turbo at the seed allocation (MLP-up 2, MLP-down 3,
attention 3, embeddings 4 bits), turbo on the QAT run, turbo-prod, int6, int8, and two
byte-matched variants (int at the uniform bit width whose artifact is closest to the
turbo artifact; turbo at the uniform bit width closest to int6). It then prints the
relative reconstruction MSE ||w - w_hat||^2 / ||w||^2 of the quantized matrices for
each bit width 2..8 (turbo, turbo-prod, row-int). Run::

    python benchmarks/quant_quality.py                       # trains 2 short tiny runs first
    python benchmarks/quant_quality.py --run runs/tiny --qat-run runs/tiny_qat --val-tokens 0
    python benchmarks/quant_quality.py --seed-size           # seed preset: artifact + code bytes

The auto-trained runs are the ``tiny`` preset at ``--model-dim`` (128) for
``--train-steps`` (120) steps of ``--batch-tokens`` (2048), raw final weights (no EMA),
so that they finish on a busy 2-core CPU. ``--fp16-max-numel`` (default 4096) lowers the
fp16 threshold so that the small model's attention matrices are quantized as the seed's
are (at 65,536 they would all stay fp16). With ``--val-tokens N`` the val split is cut to
its first N tokens (a copy under ``--out``). Timings on a shared CPU are not meaningful.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", help="trained run dir (config.json + model.pt); default: train a tiny run")
    p.add_argument("--qat-run", help="run dir trained with train.qat=true; default: train one")
    p.add_argument("--data", default=str(DATA / "fineweb_sp1024"), help="shard folder (train + val)")
    p.add_argument("--tokenizer", default=str(DATA / "tokenizers" / "fineweb_1024_bpe.model"))
    p.add_argument("--out", default=str(REPO / "runs" / "quant_quality"), help="where auto-trained runs go")
    p.add_argument("--train-steps", type=int, default=120, help="optimizer steps of each auto-trained run")
    p.add_argument("--batch-tokens", type=int, default=2048, help="tokens per step of the auto-trained runs")
    p.add_argument("--train-seconds", type=float, default=0.0, help="wall-clock cap of each auto-trained run (0 = none)")
    p.add_argument("--model-dim", type=int, default=128, help="model_dim of the auto-trained tiny runs")
    p.add_argument("--fp16-max-numel", type=int, default=4096, help="fp16 threshold for the auto-trained runs")
    p.add_argument("--val-tokens", type=int, default=65536, help="validation tokens to score (0 = all)")
    p.add_argument("--codec", default="lzma", choices=("lzma", "zstd", "none"))
    p.add_argument("--seed-size", action="store_true",
                   help="only measure the seed preset's artifact + code bytes (fresh init and non-zero weights)")
    return p.parse_args(argv)


def train_tiny(out: Path, args, qat: bool) -> Path:
    """Train a short tiny run (qat on/off) unless ``out/model.pt`` already exists."""
    if (out / "model.pt").is_file():
        print(f"reusing {out}", flush=True)
        return out
    from pgolf.presets import resolve_config
    from pgolf.train.trainer import train

    sets = [f"max_wallclock_seconds={args.train_seconds}", f"train.qat={str(qat).lower()}",
            f"iterations={args.train_steps}", f"warmdown_iters={max(1, args.train_steps * 2 // 5)}",
            f"batch_tokens={args.batch_tokens}", f"micro_batch_seqs={max(1, args.batch_tokens // 256)}",
            f"quant.fp16_max_numel={args.fp16_max_numel}", "train.device=cpu", f"model_dim={args.model_dim}",
            "train.final_weights=raw"]  # a 0.997 EMA over a short run would mostly average the init
    cfg = resolve_config("tiny", sets)
    print(f"training {out} (qat={qat}, {args.train_steps} steps of {args.batch_tokens} tokens) ...", flush=True)
    train(cfg, args.data, args.tokenizer, out)
    return out


def bench_data(args) -> str:
    """``args.data`` with its val split cut to ``--val-tokens`` (train shards linked), so the
    trainer's final evaluation and ours score the same, affordable, prefix."""
    import numpy as np

    from pgolf.data.shards import find_shards, read_shard, shard_name, write_shard

    if not args.val_tokens:
        return args.data
    out = Path(args.out) / "data"
    out.mkdir(parents=True, exist_ok=True)
    for src in find_shards(args.data, "train"):
        if not (out / src.name).exists():
            (out / src.name).symlink_to(Path(src).resolve())
    val = np.concatenate([np.asarray(read_shard(p)) for p in find_shards(args.data, "val")])
    write_shard(out / shard_name("val", 0), val[: args.val_tokens + 1])
    return str(out)


def load_model(cfg, sd):
    from pgolf.model.gpt import GPT

    model = GPT(cfg.model)
    model.load_state_dict(sd)
    return model


def bpb_of(cfg, sd, tokens, tables) -> float:
    from pgolf.model.bpb import evaluate

    model = load_model(cfg, sd)
    return evaluate(model, tokens, tables, seq_len=cfg.train.seq_len, batch_seqs=16, progress=False).bpb


def quantized(cfg, sd, scheme, codec, overrides=None):
    """(decoded state_dict, artifact bytes, bits/param) for a scheme."""
    from pgolf.quant.format.artifact import build_artifact, decode, model_roles

    c = copy.deepcopy(cfg)
    c.quant.scheme, c.quant.codec = scheme, codec
    data, ref, rows = build_artifact(sd, c, model_roles(c.model), overrides)
    out, _ = decode(data)
    assert all(out[k].equal(ref[k]) for k in ref), "decode differs from the reference"
    params = sum(r["numel"] for r in rows)
    return out, len(data), 8 * len(data) / params


def uniform(bits: int) -> dict:
    return {r: bits for r in ("embed", "attn", "proj", "mlp_up", "mlp_down")}


def closest(cfg, sd, scheme, codec, target: int, widths) -> tuple[int, tuple]:
    """The uniform bit width whose artifact size is closest to ``target`` bytes."""
    best = None
    for b in widths:
        res = quantized(cfg, sd, scheme, codec, uniform(b))
        if best is None or abs(res[1] - target) < abs(best[1][1] - target):
            best = (b, res)
    return best


def penalty_table(args, run_dir: Path, qat_dir: Path, tokens, tables) -> list[dict]:
    from pgolf.quant.quantize import load_run

    cfg, sd = load_run(run_dir)
    qcfg, qsd = load_run(qat_dir)
    rows = []

    def add(name, cfg_, sd_, fp_bpb, res):
        t = time.time()
        bpb = bpb_of(cfg_, res[0], tokens, tables)
        rows.append({"scheme": name, "artifact_bytes": res[1], "bits_per_param": res[2], "fp_bpb": fp_bpb,
                     "q_bpb": bpb, "penalty": bpb - fp_bpb})
        print(f"  {name}: {res[1]:,} B, bpb {bpb:.4f} (+{bpb - fp_bpb:.4f}) [{time.time() - t:.0f}s]", flush=True)

    fp = bpb_of(cfg, sd, tokens, tables)
    fp_qat = bpb_of(qcfg, qsd, tokens, tables)
    print(f"float val_bpb: run {fp:.4f}, qat run {fp_qat:.4f}", flush=True)
    turbo = quantized(cfg, sd, "turbo", args.codec)
    add("turbo (seed alloc 2/3/3/4)", cfg, sd, fp, turbo)
    add("turbo + QAT run", qcfg, qsd, fp_qat, quantized(qcfg, qsd, "turbo", args.codec))
    add("turbo-prod (seed alloc)", cfg, sd, fp, quantized(cfg, sd, "turbo-prod", args.codec))
    int6 = quantized(cfg, sd, "int6", args.codec)
    add("int6", cfg, sd, fp, int6)
    add("int8", cfg, sd, fp, quantized(cfg, sd, "int8", args.codec))
    b, res = closest(cfg, sd, "int6", args.codec, turbo[1], (2, 3, 4))
    add(f"int{b} (bytes ~ turbo)", cfg, sd, fp, res)
    b, res = closest(cfg, sd, "turbo", args.codec, int6[1], (4, 5, 6))
    add(f"turbo {b}-bit (bytes ~ int6)", cfg, sd, fp, res)
    return rows


def mse_table(sd, roles, qcfg) -> list[dict]:
    """Relative reconstruction MSE over all quantized matrices, per scheme and bit width."""
    import torch

    from pgolf.quant.schemes import rowint, turbo
    from pgolf.quant.calibrate.allocation import plan_state_dict
    from pgolf.quant.schemes.rotation import qjl_tensor, rotation_tensor

    mats = [sd[p.name].float().reshape(p.rows) for p in plan_state_dict(sd, roles, qcfg) if p.quantized]
    mats = [w for w in mats if float(w.abs().sum()) > 0]
    den = sum(float((w * w).sum()) for w in mats)
    out = []
    for bits in range(2, 9):
        err = {"turbo": 0.0, "turbo-prod": 0.0, "int": 0.0}
        for w in mats:
            d = w.shape[1]
            rot, lv = rotation_tensor("haar", 0, d), turbo.codebook_tensor(bits, d)
            err["turbo"] += float(((w - turbo.dequantize_mse(*turbo.quantize_mse(w, rot, lv), rot, lv)) ** 2).sum())
            lv1, sk = turbo.codebook_tensor(bits - 1, d), qjl_tensor(0, d)
            w_p = turbo.dequantize_prod(*turbo.quantize_prod(w, rot, lv1, sk), rot, lv1, sk)
            err["turbo-prod"] += float(((w - w_p) ** 2).sum())
            err["int"] += float(((w - rowint.dequantize_rows(*rowint.quantize_rows(w, bits))) ** 2).sum())
        out.append({"bits": bits, **{k: v / den for k, v in err.items()}})
    return out


def seed_size(codec: str) -> int:
    """Artifact + code bytes of the ``seed`` preset at init, and with every tensor made non-zero."""
    import torch

    from pgolf.model.gpt import GPT
    from pgolf.presets import get_preset
    from pgolf.quant.format.artifact import build_artifact
    from pgolf.submit.budget import code_bytes

    cfg = get_preset("seed")
    cfg.quant.codec = codec
    torch.manual_seed(cfg.train.seed)
    model = GPT(cfg.model)
    roles, code = model.param_roles(), code_bytes(cfg.to_dict())
    print("| seed weights | params | zero-valued params | artifact bytes | code bytes | total | bits/param | within 16,000,000 |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for label in ("fresh init", "zero tensors replaced by N(0, 0.02)"):
        sd = model.state_dict()
        if label != "fresh init":
            g = torch.Generator().manual_seed(0)
            sd = {k: (torch.randn(v.shape, generator=g) * 0.02 if v.dim() == 2 and not v.any() else v) for k, v in sd.items()}
        data, _, rows = build_artifact(sd, cfg, roles)
        params = sum(r["numel"] for r in rows)
        zeros = sum(int((sd[r["name"]] == 0).sum()) for r in rows)
        total = len(data) + code
        print(f"| {label} | {params:,} | {zeros:,} | {len(data):,} | {code:,} | {total:,} | "
              f"{8 * len(data) / params:.3f} | {total <= 16_000_000} |", flush=True)
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO))
    if args.seed_size:
        return seed_size(args.codec)
    from pgolf.data.loader import load_val_tokens
    from pgolf.data.tokenizer import byte_tables
    from pgolf.quant.format.artifact import model_roles
    from pgolf.quant.quantize import load_run

    if not args.run or not args.qat_run:
        if not Path(args.data).is_dir():
            print(f"no data at {args.data}; pass --run and --qat-run", file=sys.stderr)
            return 1
    args.data = bench_data(args)
    run_dir = Path(args.run) if args.run else train_tiny(Path(args.out) / "tiny", args, qat=False)
    qat_dir = Path(args.qat_run) if args.qat_run else train_tiny(Path(args.out) / "tiny_qat", args, qat=True)
    cfg, sd = load_run(run_dir)
    tables = byte_tables(args.tokenizer)
    tokens = load_val_tokens(args.data, cfg.train.seq_len)
    print(f"run {run_dir}, qat run {qat_dir}, {len(tokens) - 1:,} val targets, codec {args.codec}", flush=True)
    rows = penalty_table(args, run_dir, qat_dir, tokens, tables)
    print("\n| scheme | artifact bytes | bits/param | float bpb | quantized bpb | penalty |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['scheme']} | {r['artifact_bytes']:,} | {r['bits_per_param']:.3f} | {r['fp_bpb']:.4f} "
              f"| {r['q_bpb']:.4f} | {r['penalty']:+.4f} |")
    mse = mse_table(sd, model_roles(cfg.model), cfg.quant)
    print("\nrelative reconstruction MSE of the quantized matrices (sum ||w-w_hat||^2 / sum ||w||^2)")
    print("| bits | turbo | turbo-prod (b-1 + 1 QJL) | int per-row |")
    print("|---:|---:|---:|---:|")
    for r in mse:
        print(f"| {r['bits']} | {r['turbo']:.5f} | {r['turbo-prod']:.5f} | {r['int']:.5f} |")
    print(json.dumps({"penalty": rows, "mse": mse}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
