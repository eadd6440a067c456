"""Quantize a trained run directory into ``artifact.pgz`` + ``quant.json`` within the budget.

Reads ``RUN_DIR/config.json`` and ``RUN_DIR/model.pt`` (a plain state_dict, loaded with
``weights_only=True``), quantizes per ``cfg.quant`` (scheme, codec and per-role bits can
be overridden), checks ``artifact bytes + code bytes`` against the budget and writes both
files atomically. The code bytes are a number the caller hands down (``code_bytes=N``: the
length of the train_gpt.py that ``pgolf submit`` writes for the run, counted in the layers
above by :func:`pgolf.submit.budget.run_code_bytes`). Over budget
it writes nothing and raises :class:`BudgetError` unless ``allow_over_budget`` is set.
Used by ``pgolf quantize`` and the pipeline's quantize stage::

    n = run_code_bytes("runs/tiny1", scheme="turbo")     # pgolf.submit.budget
    summary = quantize_run("runs/tiny1", scheme="turbo", bits_overrides={"mlp_up": 3}, code_bytes=n)
"""

from __future__ import annotations

import sys
from pathlib import Path

from pgolf.errors import BudgetError, ConfigError, PgolfError
from pgolf.fileio import atomic_write_json, read_json

ARTIFACT_NAME, QUANT_JSON = "artifact.pgz", "quant.json"


def load_config(run_dir):
    """The RunConfig of a run directory; PgolfError naming what is missing."""
    from pgolf.config import RunConfig

    rd = Path(run_dir)
    if not rd.is_dir():
        raise PgolfError(f"{rd}: run directory not found")
    if not (rd / "config.json").is_file():
        raise PgolfError(f"{rd}: no pgolf run here (no config.json; start one with pgolf train or pgolf run)")
    return RunConfig.from_dict(read_json(rd / "config.json"))


def load_run(run_dir):
    """``(RunConfig, state_dict)`` of a run directory; PgolfError naming what is missing."""
    import torch

    cfg = load_config(run_dir)
    model_path = Path(run_dir) / "model.pt"
    if not model_path.is_file():
        raise PgolfError(f"{model_path}: trained model not found (run pgolf train first)")
    try:
        sd = torch.load(model_path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad file
        raise PgolfError(f"{model_path}: cannot load state_dict ({str(e).splitlines()[0]})") from None
    if not isinstance(sd, dict):
        raise PgolfError(f"{model_path}: expected a state_dict, got {type(sd).__name__}")
    return cfg, sd


def apply_options(cfg, scheme=None, codec=None, budget=None):
    """Copy of ``cfg`` with the quantization options replaced (validated)."""
    from pgolf.config import RunConfig
    from pgolf.quant.calibrate.allocation import SCHEMES
    from pgolf.quant.format.container import CODECS

    cfg = RunConfig.from_dict(cfg.to_dict())
    if scheme is not None:
        if scheme not in SCHEMES:
            raise ConfigError(f"unknown scheme {scheme!r}; choose one of: {', '.join(SCHEMES)}")
        cfg.quant.scheme = scheme
    if codec is not None:
        if codec not in CODECS:
            raise ConfigError(f"unknown codec {codec!r}; choose one of: {', '.join(CODECS)}")
        cfg.quant.codec = codec
    if budget is not None:
        cfg.quant.budget_bytes = int(budget)
    return cfg


def summarize(cfg, rows, artifact_bytes: int, bits, code: int) -> dict:
    """The quant.json content; ``code`` is the code bytes the caller counted for the run."""
    params = sum(r["numel"] for r in rows)
    total = artifact_bytes + code
    return {
        "scheme": cfg.quant.scheme,
        "codec": cfg.quant.codec,
        "role_bits": bits,
        "tensors": [{k: r[k] for k in ("name", "role", "kind", "bits", "numel", "rel_mse", "bytes", "calib") if k in r}
                    for r in rows],
        "params": params,
        "artifact_bytes": artifact_bytes,
        "code_bytes": code,
        "code_file": "train_gpt.py as pgolf submit writes it for this run",
        "total_bytes": total,
        "bits_per_param": 8.0 * artifact_bytes / params if params else None,
        "budget_bytes": cfg.quant.budget_bytes,
        "within_budget": total <= cfg.quant.budget_bytes,
    }


def _progress(plans):
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(plans, desc="quantize", unit="tensor", leave=False)
    return plans


def quantize_run(run_dir, scheme=None, bits_overrides=None, codec=None, budget=None,
                 allow_over_budget: bool = False, log=print, target_bytes=None, out=None,
                 data=None, calib_batches=None, *, code_bytes: int) -> dict:
    """Quantize ``run_dir``; write artifact.pgz and quant.json; return the summary dict.

    ``bits_overrides`` is ``{"mlp_up": 3, ...}`` (``pgolf quantize --bits`` parses
    ``mlp_up=3`` with :func:`pgolf.quant.commands.parse_bits_overrides`); ``log`` gets one
    summary line (pass None for silence). BudgetError when over budget (nothing written)
    unless ``allow_over_budget``. ``record``/``turbo-rd`` first collect Hessians on
    ``calib_batches`` train batches from ``data`` (default: the run's data_dir);
    ``target_bytes`` (turbo-rd) defaults to the budget minus ``code_bytes``, the counted
    length of the run's submission script (required: the caller counts it, see the module
    docstring). ``out`` writes both files there instead of into ``run_dir``.
    """
    from pgolf.quant.calibrate.allocation import role_bits
    from pgolf.quant.format.artifact import build_artifact, model_roles, write_artifact

    cfg, sd = load_run(run_dir)
    run_config = read_json(Path(run_dir) / "config.json")  # what pgolf submit builds the script from
    cfg = apply_options(cfg, scheme, codec, budget)
    bits = role_bits(cfg.quant, bits_overrides)
    from pgolf.quant.calibrate.allocation import GROUPED_SCHEMES as GROUPED

    # The script submit writes carries the quantization actually used (quant.json "quant_config").
    run_config = {**run_config, "quant": cfg.to_dict()["quant"]}
    code = int(code_bytes)
    calib, facts = None, {}
    if cfg.quant.scheme in GROUPED:
        from pgolf import features

        grouped = features.load("quant.scheme", cfg.quant.scheme)
        calib, target_bytes = grouped.prepare(run_dir, cfg, sd, code, data, calib_batches, target_bytes, log)
    blob, _, rows = build_artifact(sd, cfg, model_roles(cfg.model), bits_overrides, progress=_progress,
                                   calib=calib, target_bytes=target_bytes, facts=facts)
    summary = summarize(cfg, rows, len(blob), None if cfg.quant.scheme == "turbo-rd" else bits, code)
    summary["calibration_s"] = calib.seconds if calib is not None else None
    summary["calibration_tokens"] = calib.tokens if calib is not None else 0
    summary.update(facts)
    summary["quant_config"] = run_config["quant"]
    if cfg.quant.scheme in GROUPED:
        summary["codec"] = "groups (brotli or lzma each)"
    if not summary["within_budget"] and not allow_over_budget:
        raise BudgetError(
            f"over budget: artifact {summary['artifact_bytes']:,} B + code {summary['code_bytes']:,} B = "
            f"{summary['total_bytes']:,} B > {summary['budget_bytes']:,} B; nothing written "
            "(lower --bits, or pass --allow-over-budget)"
        )
    rd = Path(out) if out is not None else Path(run_dir)
    rd.mkdir(parents=True, exist_ok=True)
    write_artifact(rd / ARTIFACT_NAME, blob)
    atomic_write_json(rd / QUANT_JSON, summary)
    if log:
        log(f"{rd / ARTIFACT_NAME}: {summary['scheme']} {summary['artifact_bytes']:,} B + code "
            f"{summary['code_bytes']:,} B = {summary['total_bytes']:,} B "
            f"({summary['bits_per_param']:.3f} bits/param; budget {summary['budget_bytes']:,} B"
            f"{'' if summary['within_budget'] else ', OVER'})")
    return summary
