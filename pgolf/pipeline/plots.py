"""Report plots (matplotlib, Agg backend, PNG): loss curves, val_bpb per stage, bits/bytes per role.

Each function takes the per-seed records of :func:`pgolf.pipeline.results.collect_run`
and an output path, draws one figure and writes it atomically; it returns the path, or
None when the run has nothing to draw (e.g. no metrics yet). Called by
:mod:`pgolf.pipeline.report`; matplotlib is imported lazily.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from pgolf.fileio import atomic_path
from pgolf.pipeline.results import LEAKY_LABEL
from pgolf.pipeline.stats import mean_std


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> Path:
    plt = _pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def _label(rec: dict[str, Any], i: int) -> str:
    return f"seed {rec['seed']}" if rec.get("seed") is not None else f"run {i}"


def plot_losses(records: list[dict[str, Any]], path: str | os.PathLike) -> Path | None:
    """Train and val loss against step (left) and against training wall time (right)."""
    if not any(r["metrics"] or r.get("pre_quant_loss") is not None for r in records):
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for i, rec in enumerate(records):
        rows = rec["metrics"]
        color = f"C{i % 10}"
        train = [r for r in rows if r.get("train_loss") is not None]
        val = [r for r in rows if r.get("val_loss") is not None]
        for ax, xkey in zip(axes, ("step", "elapsed_s")):
            tr = [r for r in train if r.get(xkey) is not None]
            va = [r for r in val if r.get(xkey) is not None]
            if tr:
                ax.plot([r[xkey] for r in tr], [r["train_loss"] for r in tr], color=color, lw=1.2,
                        label=f"{_label(rec, i)} train")
            if va:
                ax.plot([r[xkey] for r in va], [r["val_loss"] for r in va], color=color, ls="--",
                        marker="o", ms=4, label=f"{_label(rec, i)} val")
            final_x = rec.get("steps") if xkey == "step" else rec.get("train_time_s")
            if rec.get("pre_quant_loss") is not None and final_x is not None:  # train_summary.json
                ax.plot([final_x], [rec["pre_quant_loss"]], color=color, marker="*", ms=11, ls="none",
                        label=f"{_label(rec, i)} final val (saved weights)")
    axes[0].set_xlabel("step")
    axes[1].set_xlabel("training wall time (s)")
    for ax in axes:
        ax.set_ylabel("loss (nats/token)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Training and validation loss")
    return _save(fig, path)


def stage_values(records: list[dict[str, Any]]) -> list[tuple[str, list[float], bool]]:
    """(label, per-seed values, leaky) for each evaluated stage, in pipeline order."""
    stages = [
        ("pre-quant", "pre_quant_bpb", False),
        ("post-quant\n(standard)", "post_quant_bpb", False),
        ("post-quant\n(sliding)", "sliding_bpb", False),
        ("causal\nn-gram", "ngram_bpb", False),
        ("two-pass n-gram\n" + LEAKY_LABEL.replace(" (", "\n("), "leaky_bpb", True),
    ]
    out = []
    for label, key, leaky in stages:
        values = [r[key] for r in records if r.get(key) is not None]
        if values:
            if leaky:
                modes = sorted({r["ngram_mode"] for r in records if r.get(key) is not None})
                label = label.replace("two-pass", "/".join(modes))
            out.append((label, values, leaky))
    return out


def plot_stages(records: list[dict[str, Any]], path: str | os.PathLike) -> Path | None:
    """val_bpb per stage: bar = mean over seeds, error bar = std, dots = seeds; leaky hatched."""
    stages = stage_values(records)
    if not stages:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(stages)), 4.2))
    for x, (label, values, leaky) in enumerate(stages):
        m, s = mean_std(values)
        ax.bar(x, m, yerr=s if len(values) > 1 else None, capsize=4, width=0.6,
               color="0.85" if leaky else f"C{x}", edgecolor="crimson" if leaky else "black",
               hatch="//" if leaky else None)
        ax.scatter([x] * len(values), values, color="black", s=10, zorder=3)
        ax.annotate(f"{m:.4f}", (x, m), textcoords="offset points", xytext=(0, 4), ha="center", fontsize=8)
    ax.set_xticks(range(len(stages)))
    ax.set_xticklabels([s[0] for s in stages], fontsize=8)
    lows = [min(v) for _, v, _ in stages]
    highs = [max(mean_std(v)[0] + mean_std(v)[1] for _, v, _ in stages)]
    if not any(leaky for _, _, leaky in stages):  # zoom in: stages differ by a few percent
        span = max(highs) - min(lows)
        ax.set_ylim(max(0.0, min(lows) - max(3 * span, 0.05)), max(highs) + 0.3 * span + 0.02)
    ax.set_ylabel("val_bpb (lower is better)")
    ax.set_title(f"val_bpb per stage ({len(records)} seed{'s' if len(records) != 1 else ''})")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def role_table(quant: dict[str, Any]) -> list[dict[str, Any]]:
    """Per tensor role: tensors, params, bytes, params-weighted mean bits, mean rel_mse."""
    acc: dict[str, dict[str, Any]] = defaultdict(lambda: {"tensors": 0, "numel": 0, "bytes": 0, "bit_sum": 0.0,
                                                           "mse": []})
    for t in quant.get("tensors", []):
        a = acc[t.get("role") or "other"]
        a["tensors"] += 1
        a["numel"] += int(t.get("numel") or 0)
        a["bytes"] += int(t.get("bytes") or 0)
        a["bit_sum"] += float(t.get("bits") or 0) * int(t.get("numel") or 0)
        if t.get("rel_mse") is not None:
            a["mse"].append(float(t["rel_mse"]))
    rows = []
    for role, a in sorted(acc.items(), key=lambda kv: -kv[1]["bytes"]):
        rows.append({
            "role": role, "tensors": a["tensors"], "numel": a["numel"], "bytes": a["bytes"],
            "bits": a["bit_sum"] / a["numel"] if a["numel"] else 0.0,
            "bits_per_param_stored": 8.0 * a["bytes"] / a["numel"] if a["numel"] else 0.0,
            "rel_mse": sum(a["mse"]) / len(a["mse"]) if a["mse"] else None,
        })
    return rows


def plot_roles(quant: dict[str, Any] | None, path: str | os.PathLike) -> Path | None:
    """Quantizer bits (params-weighted) and stored bytes per tensor role."""
    if not quant or not quant.get("tensors"):
        return None
    rows = role_table(quant)
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    names = [r["role"] for r in rows]
    ax1.bar(names, [r["bits"] for r in rows], color="C0", label="quantizer bits")
    ax1.plot(names, [r["bits_per_param_stored"] for r in rows], "o", color="C3", label="stored bits/param")
    ax1.set_ylabel("bits per parameter")
    ax1.legend(fontsize=8)
    ax2.bar(names, [r["bytes"] for r in rows], color="C1")
    ax2.set_ylabel("stored bytes (before the codec)")
    for ax in (ax1, ax2):
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"Bits and bytes per tensor role (scheme {quant.get('scheme')})")
    return _save(fig, path)
