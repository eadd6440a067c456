"""``pgolf report RUN_DIR [--baseline RUN_DIR]``: report.md, report.json and PNG plots of a run.

Reads each seed's ``train_summary.json``, ``quant.json``, ``eval.json`` and
``metrics.jsonl`` (see :mod:`pgolf.pipeline.results`) and writes into RUN_DIR:
``report.md`` (per-seed results, mean ± std per metric, the Welch t-test against a
baseline run, bits/bytes per tensor role, the byte budget), ``report.json`` (the same
numbers, machine-readable) and ``loss_curves.png``, ``bpb_stages.png``,
``quant_roles.png``. Every number is copied from the run's files, never recomputed.
The challenge requires an improvement of at least 0.005 nats with p < 0.01; the test
here is Welch's one-sided t-test of the score val_loss against the baseline's.

    from pgolf.pipeline.report import write_report
    path = write_report("runs/tiny", baseline="runs/base")
"""

from __future__ import annotations

import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pgolf.fileio import atomic_write_json, atomic_write_text
from pgolf.pipeline import plots
from pgolf.pipeline.results import LEAKY_LABEL, collect_bound_run, summarize
from pgolf.pipeline.stats import welch_test

#: The challenge's significance rule: improvement of at least this many nats ...
CHALLENGE_DELTA_NATS = 0.005
#: ... with a p-value below this.
CHALLENGE_P = 0.01


def fmt(value: Any, digits: int = 6) -> str:
    """Numbers as printed in the report: floats with ``digits`` decimals, ints with commas."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(fmt(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
    return out + [""]


def seed_rows(records: list[dict[str, Any]]) -> list[list[Any]]:
    """Per-seed rows of the results table (same order as :data:`SEED_HEADER`)."""
    rows = []
    for r in records:
        ngram = r["ngram_bpb"] if r["ngram_bpb"] is not None else r["leaky_bpb"]
        mode = r["ngram_mode"] or "none"
        rows.append([
            str(r["seed"]), r["steps"], fmt(r["train_time_s"], 1), r["pre_quant_bpb"], r["post_quant_bpb"],
            r["sliding_bpb"], ngram, mode + (" (leaky)" if r["leaky_bpb"] is not None else ""),
            r["artifact_bytes"], r["total_bytes"], r["within_budget"],
        ])
    return rows


SEED_HEADER = [
    "seed", "steps", "train s", "pre-quant bpb", "post-quant bpb", "sliding bpb", "n-gram bpb", "n-gram mode",
    "artifact B", "total B", "within budget",
]


def baseline_comparison(records: list[dict], base: list[dict]) -> dict[str, Any] | None:
    """Welch tests of this run's score against the baseline's (None if either lacks scores)."""
    loss_a = [r["score_loss"] for r in records if r["score_loss"] is not None]
    loss_b = [r["score_loss"] for r in base if r["score_loss"] is not None]
    bpb_a = [r["score_bpb"] for r in records if r["score_bpb"] is not None]
    bpb_b = [r["score_bpb"] for r in base if r["score_bpb"] is not None]
    if not loss_a or not loss_b:
        return None
    nats = welch_test(loss_a, loss_b, delta=CHALLENGE_DELTA_NATS)
    bpb = welch_test(bpb_a, bpb_b) if bpb_a and bpb_b else None
    passes = (not math.isnan(nats.p_one_sided)) and nats.p_one_sided < CHALLENGE_P
    return {
        "n": len(loss_a), "n_baseline": len(loss_b),
        "loss_mean": nats.mean_a, "loss_mean_baseline": nats.mean_b, "loss_diff": nats.diff,
        "delta_nats": CHALLENGE_DELTA_NATS, "t": nats.t, "df": nats.df, "p_one_sided": nats.p_one_sided,
        "bpb_diff": bpb.diff if bpb else None, "bpb_p_two_sided": bpb.p_two_sided if bpb else None,
        "meets_challenge_bar": passes,
    }


def _mean_std_cells(s: dict[str, Any]) -> list[str]:
    if all(isinstance(v, int) for v in s["values"]):  # bytes, steps
        return [f"{s['mean']:,.1f}", f"{s['std']:,.1f}"]
    return [fmt(s["mean"]), fmt(s["std"])]


def _markdown(run_dir: Path, records: list[dict], summary: dict, cmp: dict | None, baseline: str | None,
              pngs: dict[str, Path | None]) -> str:
    first = records[0]
    cfg = first.get("config") or {}
    model = cfg.get("model", {})
    lines = [f"# pgolf report: {run_dir.name}", ""]
    lines += [f"- run directory: `{run_dir}`", f"- preset: {first.get('preset') or '—'}; seeds: "
              + ", ".join(str(r["seed"]) for r in records),
              f"- model: {model.get('num_layers', '—')} layers × {model.get('model_dim', '—')} wide; "
              f"quantization: {(first.get('quant') or {}).get('scheme', '—')}",
              f"- generated: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}", ""]
    lines += ["## Results per seed", "",
              "val_bpb in bits per byte (lower is better); post-quant numbers evaluate the artifact "
              "decoded from disk.", ""]
    lines += _table(SEED_HEADER, seed_rows(records))
    lines += [f"Score per seed (the honest headline: causal n-gram if evaluated, else sliding): "
              + "; ".join(f"seed {r['seed']}: {fmt(r['score_bpb'])} ({r['score_source'] or '—'})" for r in records),
              ""]
    if any(r["leaky_bpb"] is not None for r in records):
        lines += [f"**Note:** the n-gram numbers marked leaky come from a two-pass/leave-one-out cache; they are "
                  f"{LEAKY_LABEL} and are never used as the score.", ""]
    if len(records) > 1:
        lines += ["## Mean ± std over seeds", ""]
        lines += _table(["metric", "mean", "std", "n"],
                        [[s["label"], *_mean_std_cells(s), s["n"]] for s in summary.values()])
    if cmp is not None:
        lines += [f"## Against baseline `{baseline}`", "",
                  f"Welch's one-sided t-test that the score val_loss improves on the baseline by more than "
                  f"{CHALLENGE_DELTA_NATS} nats (the challenge requires p < {CHALLENGE_P}).", ""]
        lines += _table(["", "value"], [
            ["seeds (run / baseline)", f"{cmp['n']} / {cmp['n_baseline']}"],
            ["mean val_loss (run)", cmp["loss_mean"]], ["mean val_loss (baseline)", cmp["loss_mean_baseline"]],
            ["difference (nats)", cmp["loss_diff"]], ["t", cmp["t"]], ["df", cmp["df"]],
            ["p (one-sided, Δ ≥ 0.005 nats)", cmp["p_one_sided"]],
            ["val_bpb difference", cmp["bpb_diff"]], ["p (two-sided, val_bpb equal)", cmp["bpb_p_two_sided"]],
            ["meets the challenge's bar", cmp["meets_challenge_bar"]],
        ])
    quant = first.get("quant")
    if quant:
        lines += ["## Artifact and budget" + (f" (seed {first['seed']})" if len(records) > 1 else ""), ""]
        lines += _table(["role", "tensors", "params", "quantizer bits", "stored bits/param", "bytes before codec", "mean rel_mse"],
                        [[r["role"], r["tensors"], r["numel"], r["bits"], r["bits_per_param_stored"], r["bytes"],
                          r["rel_mse"]] for r in plots.role_table(quant)])
        lines += [f"artifact {fmt(quant.get('artifact_bytes'))} B + code {fmt(quant.get('code_bytes'))} B = "
                  f"{fmt(quant.get('total_bytes'))} B of a {fmt(quant.get('budget_bytes'))} B budget "
                  f"(within budget: {fmt(quant.get('within_budget'))}); "
                  f"{fmt(quant.get('bits_per_param'), 3)} bits per parameter.", ""]
        if quant.get("code_files"):
            lines += ["Counted code files: " + ", ".join(f"`{f}`" for f in quant["code_files"]), ""]
    lines += ["## Plots", ""]
    for title, key in (("Loss curves", "loss"), ("val_bpb per stage", "stages"), ("Bits and bytes per role", "roles")):
        if pngs.get(key):
            lines += [f"![{title}]({pngs[key].name})", ""]
    return "\n".join(lines)


def write_report(run_dir: str | os.PathLike, baseline: str | os.PathLike | None = None) -> Path:
    """Write report.md, report.json and the PNGs into ``run_dir``; returns the report.md path."""
    root = Path(run_dir)
    records = collect_bound_run(root)
    summary = summarize(records)
    cmp = baseline_comparison(records, collect_bound_run(baseline)) if baseline else None
    pngs = {
        "loss": plots.plot_losses(records, root / "loss_curves.png"),
        "stages": plots.plot_stages(records, root / "bpb_stages.png"),
        "roles": plots.plot_roles(records[0].get("quant"), root / "quant_roles.png"),
    }
    drop = ("config", "train_summary", "quant", "eval", "metrics")
    atomic_write_json(root / "report.json", {
        "run_dir": str(root),
        "seeds": [{k: v for k, v in r.items() if k not in drop} for r in records],
        "summary": summary,
        "baseline": {"run_dir": str(baseline), **cmp} if cmp else None,
        "plots": [p.name for p in pngs.values() if p],
    })
    path = root / "report.md"
    atomic_write_text(path, _markdown(root, records, summary, cmp, str(baseline) if baseline else None, pngs))
    return path
