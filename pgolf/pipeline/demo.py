"""``pgolf demo``: the whole pipeline on the embedded default corpus, tiny preset, on the CPU.

Builds (or reuses) the offline default corpus (:func:`pgolf.data.corpus.ensure_default_data`),
runs :func:`pgolf.pipeline.run.run_pipeline` with the ``tiny`` preset under a short
wall-clock cap (100 s) and without the sliding-window pass, so that everything (data,
training, quantization, evaluation, report) takes under 5 minutes on 2 CPU cores, then
prints a summary table: pre-quant, post-quant and n-gram val_bpb, artifact bytes and
budget status, and the report path.

    pgolf demo [--out runs/demo] [--wallclock 120]
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from pgolf.pipeline.results import collect_run, summarize

#: Training wall-clock cap of the demo, seconds (the rest of the 5 minutes is data + eval).
DEMO_WALLCLOCK_S = 100.0
#: Overrides on top of the tiny preset: CPU, and no sliding-window pass (on 2 cores it
#: would double the evaluation time; ``pgolf run`` does it).
DEMO_SETS = ("train.device=cpu", "eval.stride=0")


def demo_config(wallclock: float | None = None):
    """The tiny preset with the demo's overrides (and the challenge env vars, if set)."""
    from pgolf.presets import resolve_config

    sets = [*DEMO_SETS, f"max_wallclock_seconds={wallclock or DEMO_WALLCLOCK_S:g}"]
    return resolve_config("tiny", sets=sets, env=os.environ)


def run_demo(out: str | os.PathLike, count_code, show_eval=None, wallclock: float | None = None,
             force: bool = False) -> Path:
    """Run the demo into ``out``; prints progress and the summary; returns the report path.
    ``count_code`` and ``show_eval`` come from the layer above, as for
    :func:`pgolf.pipeline.run.run_pipeline` (the CLI passes the submission's code-byte
    counter and the eval table printer)."""
    from pgolf.data.corpus import ensure_default_data
    from pgolf.pipeline.run import run_pipeline

    t0 = time.perf_counter()
    cfg = demo_config(wallclock)
    print(f"[pgolf demo] embedded default corpus (built once, then cached) ...", flush=True)
    data_dir = Path(ensure_default_data())
    tok = data_dir / "tokenizer.model"
    print(f"[pgolf demo] data: {data_dir}; tiny preset on the CPU, training capped at "
          f"{cfg.train.max_wallclock_seconds:g} s", flush=True)
    res = run_pipeline(cfg, data_dir, tok, out, force=force, show_eval=show_eval, count_code=count_code)
    print_summary(out, wall_s=time.perf_counter() - t0)
    return res["report"]


def summary_rows(run_dir: str | os.PathLike) -> list[tuple[str, str]]:
    """(label, value) pairs of the summary table; mean ± std when there are several seeds."""
    records = collect_run(run_dir)
    summ = summarize(records)

    def val(key: str, fmt: str = "{:.4f}") -> str:
        s = summ.get(key)
        if not s:
            return "—"
        if s["n"] == 1:
            return fmt.format(s["mean"])
        return f"{fmt.format(s['mean'])} ± {fmt.format(s['std'])} (n={s['n']})"

    within = [r["within_budget"] for r in records if r["within_budget"] is not None]
    budget = records[0].get("budget_bytes")
    status = "—" if not within else ("within" if all(within) else "OVER") + (
        f" {budget:,} B" if isinstance(budget, int) else "")
    rows = [
        ("training steps", val("steps", "{:,.0f}")),
        ("pre-quant val_bpb", val("pre_quant_bpb")),
        ("post-quant val_bpb (standard)", val("post_quant_bpb")),
        *([("post-quant val_bpb (sliding)", val("sliding_bpb"))] if "sliding_bpb" in summ else []),
        ("causal n-gram val_bpb", val("ngram_bpb")),
    ]
    if "leaky_bpb" in summ:
        rows.append(("n-gram val_bpb, leaky (not a valid compression rate)", val("leaky_bpb")))
    rows += [
        ("artifact bytes", val("artifact_bytes", "{:,.0f}")),
        ("artifact + code bytes", val("total_bytes", "{:,.0f}")),
        ("budget", status),
    ]
    return rows


def print_summary(run_dir: str | os.PathLike, wall_s: float | None = None) -> None:
    """Print the summary table and the report path."""
    rows = summary_rows(run_dir)
    width = max(len(k) for k, _ in rows)
    print()
    print(f"{'stage'.ljust(width)}  value")
    print(f"{'-' * width}  {'-' * 20}")
    for k, v in rows:
        print(f"{k.ljust(width)}  {v}")
    report = Path(run_dir) / "report.md"
    if report.is_file():
        print(f"\nreport: {report}")
    if wall_s is not None:
        print(f"wall time: {wall_s:.0f} s")
