"""Evaluation time budget: FLOPs counted from the work done, and an 8xH100 projection.

:func:`forward_flops_per_token` counts a GPT's multiply-adds per token of one forward
pass (every weight matrix it multiplies by, the head included, plus causal attention
over a context of ``ctx`` tokens); :func:`projection` turns counted forward/training
tokens into FLOPs and a time on 8 H100s at an *assumed* utilization. It is an
estimate, labelled as such in eval.json; the measured seconds of this machine sit next
to it under ``timings``.

    p = projection(model, ctx=2048, forward_tokens=n_fwd, trained_tokens=n_train)
"""

from __future__ import annotations

H100_BF16_FLOPS = 989e12  # dense bf16 peak of one H100 SXM (NVIDIA datasheet)
ASSUMED_UTILIZATION = 0.3  # assumed fraction of peak reached by evaluation (not measured)
GPUS = 8


def forward_flops_per_token(model, ctx: int) -> float:
    """2 x (weight-matrix multiply-adds) + causal attention (QK and AV over ctx/2 keys on average)."""
    from pgolf.model.layers import Embedding, Linear

    mats = sum(m.weight.numel() for m in model.modules() if isinstance(m, Linear))
    if getattr(model, "lm_head", None) is None:
        mats += sum(m.weight.numel() for n, m in model.named_modules() if isinstance(m, Embedding) and n == "tok_emb")
    cfg = model.cfg
    attn = 2 * 2 * cfg.num_layers * cfg.model_dim * (ctx / 2)
    return 2.0 * mats + attn


def projection(model, ctx: int, forward_tokens: int, trained_tokens: int = 0) -> dict:
    """Counted FLOPs (training = 3x forward) and the projected 8xH100 seconds (an estimate)."""
    per_token = forward_flops_per_token(model, ctx)
    flops = per_token * (forward_tokens + 3 * trained_tokens)
    seconds = flops / (GPUS * H100_BF16_FLOPS * ASSUMED_UTILIZATION)
    return {"estimate": True, "flops": flops, "forward_tokens": int(forward_tokens),
            "trained_tokens": int(trained_tokens), "projected_8xh100_s": seconds,
            "assumption": f"{GPUS} x {H100_BF16_FLOPS / 1e12:.0f} TFLOP/s bf16 at {ASSUMED_UTILIZATION:.0%} "
                          "utilization (assumed, not measured); CPU n-gram time not included"}
