"""Whether a state dict holds the weights of a model config: the same names and shapes.

The model is built on the meta device, so no storage is allocated and nothing is
initialized; only its parameter and buffer names and shapes are compared. Used where
weights and a config.json meet without a forward pass (``pgolf quantize``), so a config
that is not the weights' model is one line before an artifact embeds it.

    check_state(cfg.model, state, "runs/x/model.pt")   # PgolfError naming the first differences
"""

from __future__ import annotations

from pgolf.errors import PgolfError


def _shapes(state: dict) -> dict:
    return {k: tuple(v.shape) if hasattr(v, "shape") else type(v).__name__ for k, v in state.items()}


def check_state(model_cfg, state: dict, where) -> None:
    """PgolfError unless ``state`` has exactly the names and shapes of ``GPT(model_cfg)``."""
    import torch

    from pgolf.model.gpt import GPT

    with torch.device("meta"):
        want = _shapes(GPT(model_cfg).state_dict())
    got = _shapes(state)
    diffs = [f"missing {k}" for k in want if k not in got]
    diffs += [f"unexpected {k}" for k in got if k not in want]
    diffs += [f"{k}: {got[k]} vs {want[k]} in the config" for k in want if k in got and got[k] != want[k]]
    if diffs:
        more = f" and {len(diffs) - 3} more" if len(diffs) > 3 else ""
        raise PgolfError(f"{where}: weights do not match the model in config.json ({'; '.join(diffs[:3])}{more})")
