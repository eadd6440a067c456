"""The stages of a run: train -> quantize (artifact, budget check) -> evaluate the decoded artifact.

Each stage fills one run directory: training writes ``model.pt``, ``train_summary.json``
and ``checkpoint.pt``; quantization ``artifact.pgz`` and ``quant.json``; evaluation
``eval.json``. :data:`STAGE_FUNCS` holds the stage functions (replaceable in tests);
the quantize stage takes ``count_code(run_dir, scheme=, codec=, budget=)``, the code-byte
counter of the layer above (:func:`pgolf.submit.budget.run_code_bytes` for ``pgolf run``,
the script's own size in a generated ``train_gpt.py``), and hands its number down to
:func:`pgolf.quant.quantize.quantize_run`;
:func:`train_stage`, :func:`quantize_stage` and :func:`eval_stage` log and run one stage
each. Under ``torchrun`` every rank trains and evaluates; rank 0 alone quantizes.
:func:`run_once` runs every stage once into a new run directory, which is what a
generated ``train_gpt.py`` does (:mod:`pgolf.pipeline.entry`); ``pgolf run``
(:mod:`pgolf.pipeline.run`) adds skipping of finished stages, ``--force`` and several seeds.

Fault injection for tests: ``PGOLF_FAULT=<point>`` (``before-train``,
``before-quantize``, ``after-quantize``, ``before-eval``, ``after-eval``) kills the
process with SIGKILL at that point, as a crash or ``kill -9`` would.

    env = run_once(cfg, "data/", "data/tokenizer.model", "runs/x", run_code_bytes)   # env.is_main: rank 0
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Callable

from pgolf.config import RunConfig

ARTIFACT, EVAL_JSON = "artifact.pgz", "eval.json"


def log(msg: str, env=None) -> None:
    """One ``[pgolf run]`` line, from rank 0 only."""
    if env is None or env.is_main:
        print(f"[pgolf run] {msg}", flush=True)


def fault_point(point: str) -> None:
    """Test hook: SIGKILL this process when ``PGOLF_FAULT`` names ``point``."""
    if os.environ.get("PGOLF_FAULT") == point:
        print(f"[pgolf run] PGOLF_FAULT={point}: killing the process", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


# ------------------------------------------------------------------ stage functions


def _train(cfg, data_dir, tokenizer, run_dir: Path, resume: bool) -> None:
    from pgolf.train.trainer import train

    train(cfg, data_dir, tokenizer, run_dir, resume=resume)


def _bits_overrides(cfg: RunConfig) -> dict[str, int] | None:
    q = cfg.quant
    if q.scheme not in ("turbo", "turbo-prod"):
        return None
    return {"embed": q.bits_embed, "attn": q.bits_attn, "proj": q.bits_attn, "mlp_up": q.bits_mlp_up,
            "mlp_down": q.bits_mlp_down}


def _quantize(cfg: RunConfig, run_dir: Path, count_code: Callable) -> dict:
    from pgolf.quant.quantize import quantize_run

    q = cfg.quant
    opts = dict(scheme=q.scheme, codec=q.codec, budget=q.budget_bytes)
    return quantize_run(run_dir, bits_overrides=_bits_overrides(cfg), code_bytes=count_code(run_dir, **opts), **opts)


def _eval(cfg: RunConfig, run_dir: Path, data_dir, tokenizer) -> dict:
    from pgolf.eval.harness import run_eval

    e = cfg.eval
    return run_eval(run_dir / ARTIFACT, run_dir / EVAL_JSON, data_dir=data_dir, tokenizer=tokenizer, stride=e.stride,
                    ngram=e.ngram, orders=(e.ngram_min_order, e.ngram_max_order), seq_len=e.seq_len or None,
                    batch_seqs=e.batch_seqs, device=cfg.train.device)


#: The stage functions, replaceable in tests.
STAGE_FUNCS: dict[str, Callable] = {"train": _train, "quantize": _quantize, "eval": _eval}


# ------------------------------------------------------------------ distributed


def dist_env(cfg: RunConfig):
    """The process group's environment (set up under torchrun; a single process otherwise)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from pgolf.train.distributed import setup

        return setup(cfg.train.device)
    from pgolf.train.distributed import DistEnv

    return DistEnv()


def barrier(env) -> None:
    if env.distributed:
        from pgolf.train.distributed import barrier as wait

        wait(env)


def teardown(env) -> None:
    if env.distributed:
        from pgolf.train.distributed import teardown as close

        close(env)


# ------------------------------------------------------------------ one stage each


def train_stage(cfg: RunConfig, data_dir, tokenizer, run_dir: Path, env, resume: bool):
    """Train on every rank; returns the process group's environment afterwards."""
    log(f"seed {cfg.train.seed}: train ({'resuming' if resume else 'from scratch'}) -> {run_dir}", env)
    fault_point("before-train")
    STAGE_FUNCS["train"](cfg, data_dir, tokenizer, run_dir, resume)
    return dist_env(cfg)  # the trainer may have torn the process group down


def quantize_stage(cfg: RunConfig, run_dir: Path, env, count_code: Callable) -> None:
    """Quantize, on rank 0 only (``count_code``: see the module docstring)."""
    log(f"seed {cfg.train.seed}: quantize ({cfg.quant.scheme}) -> {run_dir / ARTIFACT}", env)
    if env.is_main:
        fault_point("before-quantize")
        STAGE_FUNCS["quantize"](cfg, run_dir, count_code)
        fault_point("after-quantize")


def eval_stage(cfg: RunConfig, run_dir: Path, data_dir, tokenizer, env, show=None):
    """Evaluate the decoded artifact on every rank; ``show(result, written_paths)`` runs on rank 0
    afterwards (``pgolf run`` prints the table). Returns the environment afterwards."""
    sliding = f"sliding stride {cfg.eval.stride}, " if cfg.eval.stride else ""
    log(f"seed {cfg.train.seed}: evaluate the decoded artifact (standard, {sliding}n-gram {cfg.eval.ngram})", env)
    fault_point("before-eval")
    result = STAGE_FUNCS["eval"](cfg, run_dir, data_dir, tokenizer)
    if show is not None and env.is_main:
        show(result, [run_dir / EVAL_JSON])
    env = dist_env(cfg)
    fault_point("after-eval")
    return env


def run_once(cfg: RunConfig, data_dir, tokenizer, run_dir: str | os.PathLike, count_code: Callable):
    """Every stage once, from scratch, into ``run_dir`` (the trainer refuses a directory that
    already holds a run); returns the distributed environment (``.is_main`` on rank 0).
    ``count_code`` counts the code bytes (see the module docstring)."""
    run_dir = Path(run_dir)
    env = train_stage(cfg, data_dir, tokenizer, run_dir, dist_env(cfg), resume=False)
    barrier(env)
    quantize_stage(cfg, run_dir, env, count_code)
    barrier(env)
    env = eval_stage(cfg, run_dir, data_dir, tokenizer, env)
    barrier(env)
    teardown(env)
    return env
