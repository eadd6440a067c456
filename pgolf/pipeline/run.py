"""``pgolf run``: train → quantize (artifact, budget check) → evaluate the decoded artifact → report,
resumable, for one seed or several.

The stages themselves are :mod:`pgolf.pipeline.stages`. Here each stage is skipped when its
output already exists and is valid, so an interrupted run continues where it stopped
(``force=True`` redoes every stage):

- train: ``train_summary.json`` and ``model.pt`` (an unfinished run with a
  ``checkpoint.pt`` is resumed, not restarted);
- quantize: ``quant.json`` and an ``artifact.pgz`` that decodes, newer than
  ``model.pt`` and made with the requested quantization settings;
- eval: ``eval.json`` newer than the artifact, made with the requested eval settings.

The settings each finished stage used are stamped in ``RUN_DIR/pipeline.json``; a run
directory trained with a different model/train config is refused (use ``--force`` or
another ``--out``). Several seeds go to ``RUN_DIR/seed_<s>/`` with the report in
``RUN_DIR``. Under ``torchrun`` every rank trains and evaluates; rank 0 alone
quantizes and writes the report, with barriers between stages.

    from pgolf.pipeline.run import run_pipeline
    from pgolf.submit.budget import run_code_bytes      # the counter comes from above
    run_pipeline(cfg, "data/", "data/tokenizer.model", "runs/x", seeds=[1, 2], count_code=run_code_bytes)
"""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

from pgolf.config import RunConfig
from pgolf.quant import binding
from pgolf.errors import ConfigError, PgolfError
from pgolf.fileio import atomic_write_json
from pgolf.pipeline.stages import (ARTIFACT, EVAL_JSON, barrier, dist_env, eval_stage, log, quantize_stage,
                                   teardown, train_stage)

TRAIN_SUMMARY, MODEL, CHECKPOINT, CONFIG = "train_summary.json", "model.pt", "checkpoint.pt", "config.json"
QUANT_JSON, STAMPS = "quant.json", "pipeline.json"

class Interrupted(PgolfError):
    """Training was stopped by Ctrl-C or SIGTERM: exit 130, as a shell reports SIGINT."""

    exit_code = 130


#: Fields that may differ from a run's config.json without retraining: train fields that do
#: not change what is trained, and the quant fields the quantize stage applies itself.
_AFTER_TRAINING_KEYS = {("train", k) for k in ("log_every", "val_every", "val_max_tokens", "checkpoint_every",
                                               "checkpoint_seconds",
                                               "device", "compile")} | {
    ("quant", k) for k in ("scheme", "codec", "budget_bytes", "bits_mlp_up", "bits_mlp_down", "bits_attn",
                           "bits_embed")}


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _norm(obj: Any) -> Any:
    """JSON round trip, so tuples and lists compare equal."""
    return json.loads(json.dumps(obj))


def _mtime(path: Path) -> float:
    return path.stat().st_mtime_ns if path.exists() else -1


# ------------------------------------------------------------------- stage validity


def train_done(run_dir: Path) -> bool:
    """Training finished: a readable train_summary.json with val_bpb, and a model.pt."""
    summary = _read(run_dir / TRAIN_SUMMARY)
    model = run_dir / MODEL
    return (isinstance(summary, dict) and isinstance(summary.get("val_bpb"), (int, float))
            and model.is_file() and model.stat().st_size > 0)


def _stamp(run_dir: Path, stage: str) -> dict | None:
    stamps = _read(run_dir / STAMPS)
    return stamps.get(stage) if isinstance(stamps, dict) else None


def _write_stamp(run_dir: Path, stage: str, settings: dict) -> None:
    stamps = _read(run_dir / STAMPS)
    stamps = stamps if isinstance(stamps, dict) else {}
    stamps[stage] = {"settings": _norm(settings), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write_json(run_dir / STAMPS, stamps)


def _quant_settings(cfg: RunConfig) -> dict:
    return cfg.to_dict()["quant"]


def _eval_settings(cfg: RunConfig, data_dir: str | None) -> dict:
    return {**cfg.to_dict()["eval"], "data_dir": str(Path(data_dir).resolve()) if data_dir else None}


def quant_done(run_dir: Path, cfg: RunConfig) -> bool:
    """A quant.json and an artifact that decodes, newer than model.pt, same quant settings."""
    q, art = _read(run_dir / QUANT_JSON), run_dir / ARTIFACT
    if not isinstance(q, dict) or not art.is_file() or _mtime(art) < _mtime(run_dir / MODEL):
        return False
    stamp = _stamp(run_dir, "quantize")
    if stamp is not None and stamp.get("settings") != _norm(_quant_settings(cfg)):
        return False
    if stamp is None and q.get("scheme") != cfg.quant.scheme:
        return False
    return artifact_decodes(art) and artifact_bound(run_dir, q)


def artifact_bound(run_dir: Path, quant: dict) -> bool:
    """The artifact on disk is the one quant.json describes (size, sha256 when recorded) and holds
    the run's model (a copied-in or re-quantized artifact is not)."""
    sha, size = binding.digest(run_dir / ARTIFACT)
    if quant.get("artifact_bytes") != size or quant.get("artifact_sha256", sha) != sha:
        return False
    try:
        binding.check_artifact_model(run_dir / ARTIFACT, run_dir)
    except PgolfError:
        return False
    return True


def artifact_decodes(path: Path) -> bool:
    """True when the artifact parses and decodes (no pickle involved)."""
    from pgolf.quant.format.artifact import load_artifact

    try:
        load_artifact(path)
    except PgolfError:
        return False
    return True


def eval_done(run_dir: Path, cfg: RunConfig, data_dir: str | None) -> bool:
    """An eval.json with a standard val_bpb, newer than the artifact, same eval settings."""
    ev = _read(run_dir / EVAL_JSON)
    if not isinstance(ev, dict) or not isinstance(((ev.get("neural") or {}).get("standard") or {}).get("val_bpb"),
                                                  (int, float)):
        return False
    if _mtime(run_dir / EVAL_JSON) < _mtime(run_dir / ARTIFACT):
        return False
    if not (run_dir / ARTIFACT).is_file() or ev.get("artifact_sha256") != binding.digest(run_dir / ARTIFACT)[0]:
        return False  # eval.json measured another artifact (or an unrecorded one)
    stamp = _stamp(run_dir, "eval")
    return stamp is not None and stamp.get("settings") == _norm(_eval_settings(cfg, data_dir))


def check_same_training(run_dir: Path, cfg: RunConfig) -> None:
    """Refuse to continue a run directory whose config.json trains something else."""
    saved = _read(run_dir / CONFIG)
    if not isinstance(saved, dict):
        return
    want = _norm(cfg.to_dict())
    for section in ("model", "train", "quant"):
        for key, value in want[section].items():
            if (section, key) in _AFTER_TRAINING_KEYS:
                continue
            old = (saved.get(section) or {}).get(key)
            if old != value:
                raise ConfigError(
                    f"{run_dir / CONFIG}: this run was made with {section}.{key}={old!r}, not {value!r}; "
                    f"use --force to retrain it or --out for a new run directory")


# ------------------------------------------------------------------------- per seed


def _agree(flag: bool, env) -> bool:
    if not env.distributed:
        return flag
    from pgolf.train.distributed import any_rank

    return any_rank(flag, env)


def run_seed(cfg: RunConfig, data_dir, tokenizer, run_dir: str | os.PathLike, force: bool = False, env=None,
             show_eval: Callable | None = None, *, count_code: Callable) -> dict:
    """Run every stage that is not already done for one seed; returns what each stage did.

    ``show_eval(result, written_paths)`` runs on rank 0 after an evaluation (the CLI prints its table);
    ``count_code`` is the code-byte counter the quantize stage uses (:mod:`pgolf.pipeline.stages`)."""
    run_dir = Path(run_dir)
    env = env or dist_env(cfg)
    if not force:
        check_same_training(run_dir, cfg)
    # decide before anything is written, agreed by all ranks; a redone stage invalidates the later ones
    need_train = _agree(force or not train_done(run_dir), env)
    need_quant = _agree(need_train or not quant_done(run_dir, cfg), env)
    need_eval = _agree(need_quant or not eval_done(run_dir, cfg, data_dir), env)
    did = {"train": need_train, "quantize": need_quant, "eval": need_eval}
    seed = cfg.train.seed
    if need_train:
        if force and env.is_main:
            clear_outputs(run_dir)
        barrier(env)
        resume = (not force) and (run_dir / CHECKPOINT).is_file()
        env = train_stage(cfg, data_dir, tokenizer, run_dir, env, resume)
        if _agree(not train_done(run_dir), env):  # the trainer stopped early: Ctrl-C / SIGTERM
            raise Interrupted(f"interrupted: seed {seed} stopped before the end of training (its checkpoint is in "
                              f"{run_dir}); rerun the same command to continue")
    else:
        log(f"seed {seed}: train skipped ({TRAIN_SUMMARY} and {MODEL} exist)", env)
    barrier(env)
    if need_quant:
        quantize_stage(cfg, run_dir, env, count_code)
        if env.is_main:
            binding.bind_quant(run_dir)
            _write_stamp(run_dir, "quantize", _quant_settings(cfg))
    else:
        log(f"seed {seed}: quantize skipped ({QUANT_JSON} and a decodable {ARTIFACT} exist)", env)
    barrier(env)
    if need_eval:
        env = eval_stage(cfg, run_dir, data_dir, tokenizer, env, show_eval)
        if env.is_main:
            binding.add_fields(run_dir / EVAL_JSON, binding.bind_file(run_dir / ARTIFACT))
            _write_stamp(run_dir, "eval", _eval_settings(cfg, data_dir))
    else:
        log(f"seed {seed}: eval skipped ({EVAL_JSON} is up to date)", env)
    barrier(env)
    return did


def clear_outputs(run_dir: Path) -> None:
    """``--force``: remove every stage's outputs so the trainer starts from scratch."""
    for name in (CHECKPOINT, MODEL, TRAIN_SUMMARY, CONFIG, "metrics.jsonl", "train.log", QUANT_JSON, ARTIFACT,
                 EVAL_JSON, STAMPS):
        (run_dir / name).unlink(missing_ok=True)


def seed_config(cfg: RunConfig, seed: int) -> RunConfig:
    """A copy of ``cfg`` with ``train.seed = seed``."""
    c = copy.deepcopy(cfg)
    c.train.seed = int(seed)
    return c


def run_pipeline(cfg: RunConfig, data_dir, tokenizer, out_dir: str | os.PathLike, seeds: list[int] | None = None,
                 force: bool = False, report: bool = True, baseline: str | None = None,
                 show_eval: Callable | None = None, *, count_code: Callable) -> dict[str, Any]:
    """All stages for each seed (``out_dir`` itself for one seed, ``out_dir/seed_<s>`` for
    several), then the report; returns ``{"run_dir", "seed_dirs", "stages", "report"}``.
    ``show_eval``, ``count_code``: see :func:`run_seed` (the generated script shows nothing)."""
    out = Path(out_dir)
    seeds = list(seeds) if seeds else [cfg.train.seed]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds has duplicates: {seeds}")
    from pgolf.runlock import run_lock

    env = dist_env(cfg)
    dirs = [out] if len(seeds) == 1 else [out / f"seed_{s}" for s in seeds]
    stages = []
    with run_lock(out):  # one writer per run folder (rank 0 holds it)
        for s, d in zip(seeds, dirs):
            stages.append(run_seed(seed_config(cfg, s), data_dir, tokenizer, d, force=force, env=env,
                                   show_eval=show_eval, count_code=count_code))
        report_path = None
        if report and env.is_main:
            from pgolf.pipeline.report import write_report

            report_path = write_report(out, baseline=baseline)
            log(f"report: {report_path}", env)
    teardown(env)
    return {"run_dir": out, "seed_dirs": dirs, "stages": stages, "report": report_path, "env": env}
