"""Collect a run's results from its files: one record per seed, scores, mean/std per metric.

A run directory is either one seed (``RUN_DIR/train_summary.json``, ``quant.json``,
``eval.json``, ``metrics.jsonl``) or several (``RUN_DIR/seed_<s>/`` each laid out the
same). :func:`collect_run` reads them without changing anything and returns plain
dicts; numbers are copied exactly from the files (the report and the submission quote
them verbatim). :func:`score` picks the number a run is judged by and says whether it is
a valid compression rate (DESIGN.md §7)::

    runs = collect_run("runs/tiny")        # list of per-seed dicts
    table = summarize(runs)                # {metric: {"mean", "std", "n", "values"}}
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from pgolf.errors import PgolfError
from pgolf.fileio import read_json
from pgolf.pipeline.stats import mean_std

LEAKY_LABEL = "leaky (not a valid compression rate)"

#: Metrics reported per seed and as mean ± std: (key, label).
METRICS: tuple[tuple[str, str], ...] = (
    ("pre_quant_bpb", "pre-quant val_bpb"),
    ("post_quant_bpb", "post-quant val_bpb (standard)"),
    ("sliding_bpb", "post-quant val_bpb (sliding)"),
    ("ngram_bpb", "causal n-gram val_bpb"),
    ("leaky_bpb", "n-gram val_bpb, " + LEAKY_LABEL),
    ("ttt_bpb", "score-first TTT val_bpb"),
    ("score_bpb", "score val_bpb"),
    ("score_loss", "score val_loss (nats/token)"),
    ("artifact_bytes", "artifact bytes"),
    ("total_bytes", "artifact + code bytes"),
    ("steps", "training steps"),
    ("train_time_s", "training time (s)"),
)

_SEED_DIR = re.compile(r"^seed_(-?\d+)$")


def seed_dirs(run_dir: str | os.PathLike) -> list[Path]:
    """``RUN_DIR/seed_<s>/`` folders sorted by seed, or ``[RUN_DIR]`` for a one-seed run."""
    root = Path(run_dir)
    if not root.is_dir():
        raise PgolfError(f"{root}: run directory not found")
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _SEED_DIR.match(p.name))]
    return [p for _, p in sorted(found)] if found else [root]


def _maybe_json(path: Path) -> dict | None:
    return read_json(path) if path.is_file() else None


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Rows of ``metrics.jsonl`` (skips a torn last line from a killed run)."""
    p = Path(path)
    if not p.is_file():
        return []
    rows = []
    for line in p.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _get(d: dict | None, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or d.get(k) is None:
            return None
        d = d[k]
    return d


def is_leaky(ngram: dict | None) -> bool:
    """True when an eval.json n-gram block is not a valid compression rate."""
    if not ngram:
        return False
    return ngram.get("mode") not in ("causal", "none", None) or ngram.get("valid") is False


def load_seed(seed_dir: str | os.PathLike) -> dict[str, Any]:
    """Everything the report needs from one seed's folder (missing stages give None)."""
    d = Path(seed_dir)
    config = _maybe_json(d / "config.json")
    summary = _maybe_json(d / "train_summary.json")
    quant = _maybe_json(d / "quant.json")
    ev = _maybe_json(d / "eval.json")
    ngram = _get(ev, "ngram")
    has_ngram = ngram is not None and ngram.get("mode") not in (None, "none") and ngram.get("val_bpb") is not None
    leaky = has_ngram and is_leaky(ngram)
    headline = _get(ev, "score") or {}
    ttt = headline if str(headline.get("method", "")).startswith("ttt-") else {}
    rec: dict[str, Any] = {
        "dir": str(d),
        "seed": _get(config, "train", "seed"),
        "preset": _get(config, "preset"),
        "config": config,
        "train_summary": summary,
        "quant": quant,
        "eval": ev,
        "pre_quant_bpb": _get(summary, "val_bpb"),
        "pre_quant_loss": _get(summary, "val_loss"),
        "steps": _get(summary, "steps"),
        "train_time_s": _get(summary, "train_time_s"),
        "post_quant_bpb": _get(ev, "neural", "standard", "val_bpb"),
        "post_quant_loss": _get(ev, "neural", "standard", "val_loss"),
        "sliding_bpb": _get(ev, "neural", "sliding", "val_bpb"),
        "sliding_loss": _get(ev, "neural", "sliding", "val_loss"),
        "sliding_stride": _get(ev, "neural", "sliding", "stride"),
        "ngram_mode": ngram.get("mode") if ngram else None,
        "ngram_bpb": ngram["val_bpb"] if has_ngram and not leaky else None,
        "ngram_loss": ngram.get("val_loss") if has_ngram and not leaky else None,
        "leaky_bpb": ngram["val_bpb"] if leaky else None,
        "leaky_loss": ngram.get("val_loss") if leaky else None,
        "ttt_method": ttt.get("method"),
        "ttt_bpb": ttt.get("val_bpb"),
        "ttt_loss": ttt.get("val_loss"),
        "artifact_bytes": _get(quant, "artifact_bytes"),
        "code_bytes": _get(quant, "code_bytes"),
        "total_bytes": _get(quant, "total_bytes"),
        "budget_bytes": _get(quant, "budget_bytes"),
        "within_budget": _get(quant, "within_budget"),
        "metrics": read_metrics(d / "metrics.jsonl"),
    }
    source, bpb, loss = score(rec)
    rec.update(score_source=source, score_bpb=bpb, score_loss=loss)
    return rec


def score(rec: dict[str, Any], prefer: str = "auto") -> tuple[str | None, float | None, float | None]:
    """The honest headline number of one seed: ``(source, val_bpb, val_loss)``.

    ``prefer="auto"``: the score-first TTT headline when evaluated (eval.json ``score``, with
    the causal n-gram if that was mixed in), else the causal n-gram mixture, else the
    sliding-window neural score, else the standard one. Leaky n-gram numbers are never chosen here.
    """
    order = {"auto": ("ttt", "ngram", "sliding", "post_quant"), "ttt": ("ttt",), "ngram": ("ngram",),
             "sliding": ("sliding",)}[prefer]
    for key in order:
        if rec.get(f"{key}_bpb") is not None:
            name = {"ngram": "causal n-gram", "sliding": "sliding", "post_quant": "standard"}.get(key)
            return name or f"score-first TTT ({rec['ttt_method']})", rec[f"{key}_bpb"], rec.get(f"{key}_loss")
    return None, None, None


def collect_run(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """One :func:`load_seed` record per seed folder of ``run_dir``; PgolfError if a folder holds no run."""
    dirs = seed_dirs(run_dir)
    for d in dirs:
        if not (d / "config.json").is_file():
            raise PgolfError(f"{d}: no pgolf run here (no config.json; start one with pgolf train or pgolf run)")
    return [load_seed(d) for d in dirs]


def summarize(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean, sample std and values per metric over the seeds that have it."""
    out: dict[str, dict[str, Any]] = {}
    for key, label in METRICS:
        values = [r[key] for r in records if r.get(key) is not None]
        if not values:
            continue
        m, s = mean_std(values)
        out[key] = {"label": label, "mean": m, "std": s, "n": len(values), "values": values}
    return out


def collect_bound_run(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """:func:`collect_run`, refusing (one line: what to rerun) a seed folder whose quant.json,
    eval.json and artifact.pgz disagree (:func:`pgolf.quant.binding.check_seed`)."""
    from pgolf.quant.binding import check_seed

    records = collect_run(run_dir)
    for d in seed_dirs(run_dir):
        check_seed(d)
    return records
