"""The challenge's records folder for a finished run: README.md, submission.json, train_gpt.py, logs.

:func:`make_records` checks that the run can be submitted honestly, then writes:
``train_gpt.py`` (:mod:`pgolf.submit.bundle`), ``submission.json`` (name, val_bpb,
val_loss, bytes_total, bytes_code, blurb, author, github_id, date, per-seed values),
``README.md`` (method, results per seed, mean ± std, artifact bytes) and each seed's
``train.log`` as ``train_seed<s>.log`` (plus its ``eval.json``). It refuses, with one
line, a run whose artifact plus ``train_gpt.py`` exceeds 16,000,000 bytes for any seed,
a score that would come from a leaky n-gram mode (two-pass, loo), and a run with
missing stages. ``bytes_total`` = the largest artifact over seeds + ``len(train_gpt.py)``.

    make_records("runs/seed3", "records/2026-11-28_TurboQuant", name="TurboQuant + causal n-gram",
                 author="Ada", github_id="ada")
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pgolf.errors import BudgetError, PgolfError
from pgolf.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text
from pgolf.pipeline.results import LEAKY_LABEL, collect_bound_run, is_leaky, score
from pgolf.pipeline.stats import mean_std
from pgolf.submit import budget
from pgolf.submit.bundle import build_script

#: The challenge's limit on artifact + code bytes (decimal), not configurable.
CHALLENGE_BYTES = 16_000_000


class LeakyScoreError(PgolfError):
    """The submitted number would come from a non-causal / unnormalized evaluation."""


def pick_scores(records: list[dict[str, Any]], prefer: str = "auto") -> list[tuple[str, float, float | None]]:
    """Per seed ``(source, val_bpb, val_loss)`` to submit; refuses leaky or missing numbers.

    ``prefer="auto"`` submits the score-first TTT headline when the run evaluated TTT, else
    the n-gram number when it evaluated an n-gram mode, else the sliding-window neural
    number; ``"ttt"``/``"ngram"``/``"sliding"`` force one of them.
    """
    if prefer not in ("auto", "ttt", "ngram", "sliding"):
        raise PgolfError(f"--score {prefer!r}: choose auto, ttt, ngram or sliding")
    out = []
    for r in records:
        where = r["dir"]
        if r.get("eval") is None:
            raise PgolfError(f"{where}: no eval.json; finish the run first (pgolf run ... resumes it)")
        ngram = r["eval"].get("ngram") or {}
        has_ngram = ngram.get("mode") not in (None, "none") and ngram.get("val_bpb") is not None
        want = prefer if prefer != "auto" else ("ttt" if r.get("ttt_bpb") is not None else
                                                "ngram" if has_ngram else "sliding")
        if want == "ngram" and has_ngram and is_leaky(ngram):
            raise LeakyScoreError(
                f"{where}: the n-gram val_bpb {ngram['val_bpb']} comes from mode {ngram.get('mode')!r}, "
                f"{LEAKY_LABEL}; re-evaluate with --ngram causal or submit with --score sliding")
        source, bpb, loss = score(r, want)
        if bpb is None:
            raise PgolfError(f"{where}: eval.json has no {want} val_bpb to submit")
        out.append((source, bpb, loss))
    return out


def check_budget(records: list[dict[str, Any]], code_bytes: int) -> int:
    """Largest artifact + code over seeds; BudgetError when over :data:`CHALLENGE_BYTES`."""
    worst = 0
    for r in records:
        art = r.get("artifact_bytes")
        if art is None:
            raise PgolfError(f"{r['dir']}: no quant.json with artifact_bytes; finish the run first")
        total = int(art) + code_bytes
        if total > CHALLENGE_BYTES:
            raise BudgetError(
                f"{r['dir']}: artifact {int(art):,} B + train_gpt.py {code_bytes:,} B = {total:,} B exceeds the "
                f"challenge's {CHALLENGE_BYTES:,} B")
        worst = max(worst, total)
    return worst


def _readme(name: str, blurb: str, records: list[dict], scores: list[tuple], sub: dict[str, Any]) -> str:
    cfg = records[0].get("config") or {}
    m, t, q, e = (cfg.get(k, {}) for k in ("model", "train", "quant", "eval"))
    lines = [f"# {name}", "", blurb or "", "", "## Method", "",
             f"- model: {m.get('num_layers')} layers, width {m.get('model_dim')}, {m.get('num_heads')} heads "
             f"({m.get('num_kv_heads')} KV), MLP ×{m.get('mlp_mult')}, vocab {m.get('vocab_size')} (preset "
             f"`{cfg.get('preset')}` of pgolf)",
             f"- training: Muon + AdamW, {t.get('batch_tokens'):,} tokens/step at sequence {t.get('seq_len')}, "
             f"wall-clock cap {t.get('max_wallclock_seconds')} s, EMA {t.get('ema_decay')}, QAT {t.get('qat')}"
             if t.get("batch_tokens") else "- training: see RUN_CONFIG in train_gpt.py",
             f"- quantization: {q.get('scheme')} (bits: MLP-up {q.get('bits_mlp_up')}, MLP-down "
             f"{q.get('bits_mlp_down')}, attention {q.get('bits_attn')}, embeddings {q.get('bits_embed')}), "
             f"codec {q.get('codec')}",
             f"- evaluation of the artifact decoded from disk: sliding windows (stride {e.get('stride')}), "
             f"n-gram mode `{e.get('ngram')}`; the submitted number is the {scores[0][0]} val_bpb. "
             "Every probability depends only on the artifact and earlier tokens and is normalized over "
             "the vocabulary.", "",
             "## Results", "",
             "| seed | val_loss | val_bpb | pre-quant val_bpb | steps | train time (s) | artifact bytes | "
             "bytes total |", "|---|---|---|---|---|---|---|---|"]
    for r, (src, bpb, loss) in zip(records, scores):
        art = r["artifact_bytes"]
        lines.append(f"| {r['seed']} | {loss if loss is not None else '—'} | {bpb} | {r['pre_quant_bpb']} | "
                     f"{r['steps']} | {r['train_time_s']} | {art:,} | {art + sub['bytes_code']:,} |")
    spread = (f"Mean val_bpb {sub['val_bpb']:.6f} ± {sub['val_bpb_std']:.6f} (sample std over {len(records)} seeds)."
              if len(records) > 1 else f"val_bpb {sub['val_bpb']:.6f} (one seed: no spread estimate; run more seeds).")
    lines += ["", spread, "",
              f"Bytes: largest artifact + train_gpt.py ({sub['bytes_code']:,} B) = {sub['bytes_total']:,} B "
              f"of {CHALLENGE_BYTES:,} B.", "",
              "## Reproduce", "", "```bash",
              "torchrun --standalone --nproc_per_node=8 train_gpt.py   # DATA_PATH, TOKENIZER_PATH, SEED=...",
              "```", "", "train_gpt.py was generated by pgolf from its package source (`pgolf submit`).", ""]
    return "\n".join(lines)


def make_records(run_dir: str | os.PathLike, out_dir: str | os.PathLike, name: str, author: str, github_id: str,
                 blurb: str = "", prefer: str = "auto") -> dict[str, Any]:
    """Check and write the records folder; returns the submission.json dict."""
    records = collect_bound_run(run_dir)
    scores = pick_scores(records, prefer)
    cfg = records[0].get("config")
    if not cfg:
        raise PgolfError(f"{records[0]['dir']}: no config.json; is this a pgolf run directory?")
    quant_used = (records[0].get("quant") or {}).get("quant_config")
    if isinstance(quant_used, dict):  # the quantization that made the artifacts (pgolf quantize --scheme ...)
        cfg = {**cfg, "quant": quant_used}
    script = build_script(cfg)
    code_bytes = budget.code_bytes(cfg)  # == len(script): the one definition quantize uses too
    bytes_total = check_budget(records, code_bytes)
    bpbs = [s[1] for s in scores]
    losses = [s[2] for s in scores if s[2] is not None]
    mean_bpb, std_bpb = mean_std(bpbs)
    sub: dict[str, Any] = {
        "name": name, "author": author, "github_id": github_id, "blurb": blurb,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "val_bpb": mean_bpb, "val_bpb_std": std_bpb,
        "val_loss": mean_std(losses)[0] if len(losses) == len(scores) else None,
        "score_source": scores[0][0],
        "bytes_total": bytes_total, "bytes_code": code_bytes,
        "bytes_model": max(int(r["artifact_bytes"]) for r in records),
        "seeds": [{"seed": r["seed"], "val_bpb": s[1], "val_loss": s[2], "source": s[0],
                   "artifact_bytes": r["artifact_bytes"]} for r, s in zip(records, scores)],
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "train_gpt.py", script)
    for r in records:
        for src, dst in (("train.log", f"train_seed{r['seed']}.log"), ("eval.json", f"eval_seed{r['seed']}.json")):
            if (Path(r["dir"]) / src).is_file():
                atomic_write_bytes(out / dst, (Path(r["dir"]) / src).read_bytes())
    atomic_write_text(out / "README.md", _readme(name, blurb, records, scores, sub))
    atomic_write_json(out / "submission.json", sub)
    return sub
