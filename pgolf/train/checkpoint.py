"""Run-directory files of the train stage: resume checkpoints and the final weights.

``RUN_DIR/checkpoint.pt`` holds everything needed to continue a stopped run (model,
Muon momentum, AdamW state, EMA, SWA, loader position, RNG states, step, elapsed
training time); ``RUN_DIR/model.pt`` holds the final weights as a plain GPT
``state_dict``. Both are written atomically with ``torch.save`` and contain only
tensors, numbers, strings, lists and dicts, so they load with ``weights_only=True``.

    model, cfg = load_trained_model("runs/tiny")   # GPT in eval mode + its RunConfig
"""

from __future__ import annotations

import os
from pathlib import Path

from pgolf.errors import PgolfError
from pgolf.fileio import atomic_path, read_json

CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
CONFIG = "config.json"


def save_torch(path: str | os.PathLike, obj) -> None:
    """``torch.save`` to ``path`` atomically (temp file + rename), through a file object so
    the archive's inner name is torch's fixed one, not the temp name: same state, same bytes."""
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def load_torch(path: str | os.PathLike, map_location="cpu"):
    """``torch.load(weights_only=True)``; PgolfError naming the file when unreadable."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise PgolfError(f"{p}: file not found")
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # corrupt/foreign files raise many different types
        raise PgolfError(f"{p}: not a readable torch checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None


def load_run_config(run_dir: str | os.PathLike):
    """The RunConfig saved in ``RUN_DIR/config.json`` plus its data_dir and tokenizer."""
    from pgolf.config import RunConfig

    d = read_json(Path(run_dir) / CONFIG)
    if not isinstance(d, dict) or "model" not in d:
        raise PgolfError(f"{Path(run_dir) / CONFIG}: not a pgolf run config")
    extra = {k: d[k] for k in ("data_dir", "tokenizer") if k in d}
    return RunConfig.from_dict(d), extra


def load_trained_model(run_dir: str | os.PathLike):
    """``(GPT, RunConfig)`` from a finished run directory (weights from model.pt)."""
    from pgolf.model.gpt import GPT

    cfg, _ = load_run_config(run_dir)
    state = load_torch(Path(run_dir) / MODEL)
    model = GPT(cfg.model)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise PgolfError(f"{Path(run_dir) / MODEL}: weights do not match the model in config.json ({str(e).splitlines()[0]})") from None
    model.eval()
    return model, cfg
