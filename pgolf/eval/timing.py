"""Evaluation time budget: FLOPs counted from the work done, and an 8xH100 projection.

:func:`forward_flops_per_token` counts a GPT's multiply-adds per token of one forward
pass (every weight matrix it multiplies by, once per application of its block, so depth
recurrence counts its repeated layers; the head included; plus causal attention over a
context of ``ctx`` tokens); :func:`projection` turns counted forward/training tokens into
FLOPs and a time on 8 H100s at an *assumed* utilization, plus a per-step overhead times
the number of sequential steps where the caller measured one. It is an
estimate, labelled as such in eval.json; the measured seconds of this machine sit next
to it under ``timings``.

    p = projection(model, ctx=2048, forward_tokens=n_fwd, trained_tokens=n_train)
"""

from __future__ import annotations

H100_BF16_FLOPS = 989e12  # dense bf16 peak of one H100 SXM (NVIDIA datasheet)
ASSUMED_UTILIZATION = 0.3  # assumed fraction of peak reached by evaluation (not measured)
GPUS = 8


def layer_applications(model) -> list[int]:
    """How many times each block runs in one forward (depth recurrence repeats some)."""
    order = model.looped_order if getattr(model, "looping", False) else getattr(model, "plain_order", None)
    n = len(model.blocks)
    order = list(range(n)) if order is None else order
    return [order.count(i) for i in range(n)]


def forward_flops_per_token(model, ctx: int) -> float:
    """2 x (weight-matrix multiply-adds, each block's counted once per application) + causal
    attention (QK and AV over ctx/2 keys on average, per block application)."""
    from pgolf.model.layers import Embedding, Linear

    def mats(module) -> int:
        return sum(m.weight.numel() for m in module.modules() if isinstance(m, Linear))

    runs = layer_applications(model)
    total = mats(model) + sum((k - 1) * mats(b) for k, b in zip(runs, model.blocks))
    if getattr(model, "lm_head", None) is None:
        total += sum(m.weight.numel() for n, m in model.named_modules() if isinstance(m, Embedding) and n == "tok_emb")
    attn = 2 * 2 * sum(runs) * model.cfg.model_dim * (ctx / 2)
    return 2.0 * total + attn


def projection(model, ctx: int, forward_tokens: int, trained_tokens: int = 0, steps: int = 0,
               step_overhead_s: float = 0.0) -> dict:
    """Counted FLOPs (training = 3x forward) and the projected 8xH100 seconds (an estimate):
    FLOPs at the assumed utilization, plus ``steps`` sequential steps of ``step_overhead_s``
    each (launch and optimizer latency that FLOPs do not count; give a measured value)."""
    per_token = forward_flops_per_token(model, ctx)
    flops = per_token * (forward_tokens + 3 * trained_tokens)
    seconds = flops / (GPUS * H100_BF16_FLOPS * ASSUMED_UTILIZATION) + steps * step_overhead_s
    return {"estimate": True, "flops": flops, "flops_per_token": per_token, "forward_tokens": int(forward_tokens),
            "trained_tokens": int(trained_tokens), "sequential_steps": int(steps),
            "step_overhead_s": float(step_overhead_s), "projected_8xh100_s": seconds,
            "assumption": f"{GPUS} x {H100_BF16_FLOPS / 1e12:.0f} TFLOP/s bf16 at {ASSUMED_UTILIZATION:.0%} "
                          "utilization (assumed, not measured), plus sequential steps x the given per-step "
                          "overhead; CPU n-gram time not included"}
