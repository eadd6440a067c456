"""One short device check of the seed preset's training step; writes gpu_check.json.

Measures, in this order (each part records an error string instead of stopping the
rest): the device, torch and CUDA versions and the attention backend; graph breaks of
the seed model's training forward (QAT hooked, ``torch._dynamo.explain``); tokens/s,
ms/step and peak memory of the real training step (Trainer.step: accumulation, Muon,
AdamW, EMA) at 786,432 tokens per step with QAT off and then on, in the same compiled
trainer (QAT switches without recompiling); and the parity of fp32 and bf16 logits of
one model at T = 2048. On a GPU it runs the ``seed`` preset; ``--tiny --device cpu`` is
a smoke test of the same code on the ``tiny`` preset. Run::

    python benchmarks/gpu_check.py                         # CUDA: seed preset (about 3-5 min on an H100/H200)
    python benchmarks/gpu_check.py --tiny --device cpu     # CPU smoke test of this script

Numbers are measured, never asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _guard(out: dict, key: str, fn):
    """Run one part; on failure record a one-line error under ``key`` and go on."""
    t0 = time.perf_counter()
    try:
        out[key] = fn()
    except Exception as e:  # a device check reports every part it can
        traceback.print_exc()
        out[key] = {"error": f"{type(e).__name__}: {e}"}
    print(f"[gpu_check] {key}: {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)


def environment(cfg, device) -> dict:
    import torch

    from pgolf.model.attention import flash_attn_for, sdpa_supports_gqa

    cuda = device.type == "cuda"
    head_dim = cfg.model.model_dim // cfg.model.num_heads
    backend = f"flash-attn-3 (head_dim {head_dim})" if cuda and flash_attn_for(head_dim) is not None else (
        "sdpa (enable_gqa)" if sdpa_supports_gqa() else "sdpa (repeated kv heads)")
    return {"device": torch.cuda.get_device_name(device) if cuda else "cpu", "torch": torch.__version__,
            "cuda": torch.version.cuda, "attention_backend": backend}


def graph_breaks(cfg, device) -> dict:
    """Graph breaks of the model's training forward (loss) with QAT hooked."""
    import torch

    from pgolf.model.gpt import GPT
    from pgolf.quant.schemes.qat import prepare_qat
    from pgolf.train.precision import apply_precision

    model = GPT(cfg.model).to(device)
    apply_precision(model, cfg.train.precision)
    prepare_qat(model, cfg.quant)
    idx = torch.randint(0, cfg.model.vocab_size, (1, 128), device=device)
    torch._dynamo.reset()
    ex = torch._dynamo.explain(model)(idx, idx)
    return {"graph_breaks": ex.graph_break_count, "graphs": ex.graph_count,
            "reasons": [str(r.reason) for r in ex.break_reasons][:5]}


def throughput(cfg, data, steps: int, warmup: int) -> dict:
    """ms/step and tokens/s with QAT off (lr scale 1.0) then on (0.1), one trainer."""
    import torch

    from pgolf.quant.schemes.qat import qat_state
    from pgolf.train import distributed as du
    from pgolf.train.trainer import Trainer
    from train_throughput import median_step_ms

    env = du.setup(cfg.train.device, cfg.train.threads)
    tr = Trainer(cfg, data, env)
    cuda = env.device.type == "cuda"

    def timed(lr_scale: float) -> dict:
        for _ in range(warmup):
            tr.step(lr_scale, cfg.train.muon_momentum)
        if cuda:
            torch.cuda.synchronize(env.device)
            torch.cuda.reset_peak_memory_stats(env.device)
        ms = median_step_ms(tr, steps, lr_scale)
        bits = sorted({b for b in qat_state(tr.model).values() if b is not None})
        return {"ms_per_step": round(ms, 2), "tokens_per_s": round(cfg.train.batch_tokens / (ms / 1000)),
                "qat_bits": bits, "peak_memory_gib": round(torch.cuda.max_memory_allocated(env.device) / 2**30, 2)
                if cuda else None}

    res = {"tokens_per_step": cfg.train.batch_tokens, "accum": tr.loader.accum, "steps": steps, "warmup": warmup,
           "compiled": tr.fwd is not tr.model, "qat_off": timed(1.0), "qat_on": timed(0.1)}
    res["qat_on_over_off"] = round(res["qat_on"]["tokens_per_s"] / res["qat_off"]["tokens_per_s"], 3)
    du.teardown(env)
    return res


def logit_parity(cfg, device, seq_len: int) -> dict:
    """Max/mean |fp32 - bf16| logits of one randomly perturbed model at ``seq_len``."""
    import torch

    from pgolf.model.gpt import GPT
    from pgolf.train.precision import apply_precision

    torch.manual_seed(0)
    ref = GPT(cfg.model).to(device)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    low = GPT(cfg.model).to(device)
    low.load_state_dict(ref.state_dict())
    apply_precision(low, "bf16")
    idx = torch.randint(0, cfg.model.vocab_size, (1, seq_len), device=device)
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.no_grad():
            a, b = ref.eval().forward_logits(idx), low.eval().forward_logits(idx)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    diff = (a - b).abs()
    agree = (a.argmax(-1) == b.argmax(-1)).float().mean()
    return {"seq_len": seq_len, "max_abs_diff": diff.max().item(), "mean_abs_diff": diff.mean().item(),
            "logit_abs_max": a.abs().max().item(), "argmax_agreement": agree.item()}


def main(argv=None) -> int:
    import torch

    from pgolf.fileio import atomic_write_json
    from pgolf.presets import resolve_config
    from train_throughput import random_data

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    ap.add_argument("--tiny", action="store_true", help="the tiny preset instead of seed (CPU smoke test)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per QAT phase (default 6 seed / 2 tiny)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps per phase (default 3 seed / 1 tiny)")
    ap.add_argument("--out", default="gpu_check.json", help="JSON output (default gpu_check.json)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    dev = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(dev)
    preset = "tiny" if args.tiny else "seed"
    steps = args.steps or (2 if args.tiny else 6)
    warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 3)
    cfg = resolve_config(preset, args.sets + [f"device={dev}", "qat=true"])
    out: dict = {"preset": preset, "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}
    _guard(out, "environment", lambda: environment(cfg, device))
    _guard(out, "compile", lambda: graph_breaks(cfg, device))
    with tempfile.TemporaryDirectory() as tmp:
        data = random_data(Path(tmp), cfg.model.vocab_size, max(4 * cfg.train.batch_tokens, 200_000))
        _guard(out, "throughput", lambda: throughput(cfg, data, steps, warmup))
    _guard(out, "logit_parity", lambda: logit_parity(cfg, device, 256 if args.tiny else 2048))
    print(json.dumps(out, indent=2))
    atomic_write_json(args.out, out)
    print(f"[gpu_check] wrote {args.out}", file=sys.stderr)
    return 0 if not any(isinstance(v, dict) and "error" in v for v in out.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
