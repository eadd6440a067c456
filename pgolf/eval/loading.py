"""Load a model to evaluate: from a run directory (``model.pt``) or a quantized artifact.

``load_for_eval(source, artifact=False)`` accepts

* a run directory: ``RUN_DIR/config.json`` (a ``RunConfig.to_dict()`` plus the trainer's
  top-level ``data_dir`` and ``tokenizer``) and ``RUN_DIR/model.pt`` (a plain state dict,
  loaded with ``weights_only=True``); with ``artifact=True`` it decodes
  ``RUN_DIR/artifact.pgz`` instead;
* an artifact file (``*.pgz``), decoded with :func:`pgolf.quant.format.artifact.load_artifact`
  (never unpickled); a ``config.json`` beside it supplies ``data_dir``/``tokenizer``.

and returns a :class:`Loaded` with the GPT (eval mode, on ``device``), its RunConfig and
where its data lives.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgolf.errors import PgolfError

ARTIFACT_NAME = "artifact.pgz"


@dataclass
class Loaded:
    model: Any  # pgolf.model.gpt.GPT
    cfg: Any  # pgolf.config.RunConfig
    kind: str  # "checkpoint" | "artifact"
    path: Path  # the file the weights came from
    data_dir: str | None  # from the run's config.json, when known
    tokenizer: str | None


def _run_extra(run_dir: Path) -> dict:
    """``data_dir``/``tokenizer`` from a config.json in ``run_dir`` (empty when absent)."""
    if not (run_dir / "config.json").is_file():
        return {}
    from pgolf.train.checkpoint import load_run_config

    return load_run_config(run_dir)[1]


def _build(state: dict, cfg, where: Path, device):
    from pgolf.model.gpt import GPT

    model = GPT(cfg.model)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise PgolfError(f"{where}: weights do not match the model config ({str(e).strip().splitlines()[0]})") from None
    return model.to(device).eval()


def load_for_eval(source: str | os.PathLike, artifact: bool = False, device="cpu") -> Loaded:
    """Model + config + data location from a run directory or an artifact file."""
    p = Path(source)
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise PgolfError(f"{p}: not a run directory (no config.json)")
        if artifact:
            return _from_artifact(p / ARTIFACT_NAME, _run_extra(p), device)
        from pgolf.train.checkpoint import load_run_config, load_torch

        cfg, extra = load_run_config(p)
        if not (p / "model.pt").is_file() and (p / ARTIFACT_NAME).is_file():
            raise PgolfError(f"{p / 'model.pt'}: not found; pass --artifact to evaluate {p / ARTIFACT_NAME}")
        state = load_torch(p / "model.pt")
        model = _build(state, cfg, p / "model.pt", device)
        return Loaded(model, cfg, "checkpoint", p / "model.pt", extra.get("data_dir"), extra.get("tokenizer"))
    if p.is_file():
        return _from_artifact(p, _run_extra(p.parent), device)
    raise PgolfError(f"{p}: no such run directory or artifact file")


def _from_artifact(path: Path, extra: dict, device) -> Loaded:
    from pgolf.quant.format.artifact import load_artifact

    if not path.is_file():
        raise PgolfError(f"{path}: artifact not found (quantize the run first: pgolf quantize)")
    state, cfg = load_artifact(path)
    model = _build(state, cfg, path, device)
    return Loaded(model, cfg, "artifact", path, extra.get("data_dir"), extra.get("tokenizer"))
