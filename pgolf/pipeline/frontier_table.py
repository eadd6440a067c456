"""The table of ``pgolf frontier``: one row per (size, scheme), as markdown, JSON and a PNG.

:func:`make_row` flattens a size's ``size.json`` and a cell's ``cell.json`` into one row
(params, steps, pre-quant bpb, artifact bytes, bits/param, post-quant bpb, penalty);
:func:`write_table` writes ``frontier.json`` (settings + rows), ``frontier.md`` (the table
and, per scheme, its best cell) and ``frontier.png`` (post-quant bpb against parameters,
one line per scheme, the float models dashed), each atomically. Every number is copied
from the cell files; nothing is recomputed. Called by :mod:`pgolf.pipeline.frontier`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pgolf.fileio import atomic_path, atomic_write_json, atomic_write_text

NO_FIT = "does not fit"


def make_row(size: str, info: dict, cell: dict) -> dict[str, Any]:
    """One table row from ``size.json`` (``info``) and ``cell.json`` (``cell``)."""
    pre = (info.get("pre_quant") or {}).get("val_bpb")
    post = (cell.get("post_quant") or {}).get("val_bpb") if cell.get("status") == "ok" else None
    return {
        "size": size, "params": info.get("params"), "steps": info.get("steps"),
        "train_time_s": info.get("train_time_s"), "pre_quant_bpb": pre, "scheme": cell.get("scheme"),
        "status": cell.get("status"), "setting": cell.get("setting"),
        "model_bytes_budget": cell.get("model_bytes_budget"), "artifact_bytes": cell.get("artifact_bytes"),
        "bits_per_param": cell.get("bits_per_param"), "post_quant_bpb": post,
        "penalty": post - pre if post is not None and pre is not None else None,
        "method": (cell.get("post_quant") or {}).get("method"),
    }


def best_per_scheme(rows: list[dict]) -> dict[str, dict]:
    """Per scheme, its row with the lowest post-quant bpb (schemes with no fitting cell left out)."""
    best: dict[str, dict] = {}
    for r in rows:
        if r["post_quant_bpb"] is not None and (r["scheme"] not in best
                                                or r["post_quant_bpb"] < best[r["scheme"]]["post_quant_bpb"]):
            best[r["scheme"]] = r
    return best


def _f(v, fmt: str) -> str:
    return "—" if v is None else format(v, fmt)


def _or_preset(value, unit: str = "") -> str:
    return "the preset's" if value is None else f"{value:g}{unit}"


def markdown(rows: list[dict], settings: dict) -> str:
    """The table as markdown, with the settings above it and each scheme's best cell below."""
    budget = settings.get("model_bytes")
    lines = [
        "# pgolf frontier", "",
        f"preset `{settings.get('preset')}`, training cap {_or_preset(settings.get('wallclock'), ' s')}, "
        f"seed {_or_preset(settings.get('seed'))}, QAT `{settings.get('qat')}`, "
        f"model bytes {f'{budget:,}' if budget else f'16,000,000 minus code'}; data `{settings.get('data_dir')}`",
        "",
        "| size | params | steps | train s | pre-quant bpb | scheme | setting | bytes | bits/param | post-quant bpb "
        "| penalty |",
        "|---|---:|---:|---:|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']} | {_f(r['params'], ',')} | {_f(r['steps'], ',')} | {_f(r['train_time_s'], '.0f')} "
            f"| {_f(r['pre_quant_bpb'], '.4f')} | {r['scheme']} | {r['setting'] if r['status'] == 'ok' else NO_FIT} "
            f"| {_f(r['artifact_bytes'], ',')} | {_f(r['bits_per_param'], '.3f')} | {_f(r['post_quant_bpb'], '.4f')} "
            f"| {_f(r['penalty'], '+.4f')} |")
    best = best_per_scheme(rows)
    lines.append("")
    for scheme, r in sorted(best.items(), key=lambda kv: kv[1]["post_quant_bpb"]):
        lines.append(f"- best `{scheme}`: {r['post_quant_bpb']:.4f} bpb at {r['size']} ({r['params']:,} params, "
                     f"{r['setting']}, {r['artifact_bytes']:,} B)")
    if not best:
        lines.append("- no cell fits the budget")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: str | os.PathLike, settings: dict) -> Path:
    """Post-quant bpb against parameters (log x), one line per scheme; float models dashed."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    sizes = sorted({(r["params"], r["size"], r["pre_quant_bpb"]) for r in rows if r["params"]})
    pre = [(p, b) for p, _, b in sizes if b is not None]
    if pre:
        ax.plot([p for p, _ in pre], [b for _, b in pre], color="gray", ls="--", marker="x", label="float (pre-quant)")
    for i, scheme in enumerate(dict.fromkeys(r["scheme"] for r in rows)):
        mine = sorted((r for r in rows if r["scheme"] == scheme and r["params"]), key=lambda r: r["params"])
        nan = float("nan")  # a cell that does not fit breaks the line
        ax.plot([r["params"] for r in mine], [nan if r["post_quant_bpb"] is None else r["post_quant_bpb"]
                                              for r in mine], marker="o", color=f"C{i}", label=scheme)
        for r in mine:  # each point says what it spent
            if r["post_quant_bpb"] is not None:
                ax.annotate(f"{r['bits_per_param']:.2f} b/p", (r["params"], r["post_quant_bpb"]),
                            textcoords="offset points", xytext=(4, 4), fontsize=7, color=f"C{i}")
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("val_bpb (post-quantization)")
    budget = settings.get("model_bytes")
    ax.set_title(f"frontier: {f'{budget:,}' if budget else '16,000,000 - code'} model bytes, "
                 f"cap {_or_preset(settings.get('wallclock'), ' s')}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def write_table(rows: list[dict], settings: dict, out: str | os.PathLike) -> list[Path]:
    """Write frontier.json, frontier.md and frontier.png into ``out``; returns the paths."""
    out = Path(out)
    atomic_write_json(out / "frontier.json", {"settings": settings, "rows": rows,
                                              "best": best_per_scheme(rows)})
    atomic_write_text(out / "frontier.md", markdown(rows, settings))
    return [out / "frontier.md", out / "frontier.json", plot(rows, out / "frontier.png", settings)]
