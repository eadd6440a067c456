"""A model whose ``forward_logits`` is compiled (``torch.compile(fullgraph=True)``) for evaluation.

:func:`for_eval` wraps a GPT so that the evaluation drivers (anything calling
``forward_logits``, ``parameters``, ``eval``/``train``) run the compiled graph; on CPU,
or when ``compile`` is off, it returns the model itself::

    model = for_eval(model, device, cfg.train.compile)   # "auto": compile on CUDA only
"""

from __future__ import annotations

import torch


class CompiledLogits(torch.nn.Module):
    """Holds ``model`` and a compiled view of its ``forward_logits`` (shared weights)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self._logits = torch.compile(model.forward_logits, fullgraph=True)

    def forward_logits(self, idx: torch.Tensor) -> torch.Tensor:
        return self._logits(idx)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.model(idx, targets)


def for_eval(model: torch.nn.Module, device: torch.device, compile_mode: str = "auto") -> torch.nn.Module:
    """``model`` with a compiled ``forward_logits`` when ``compile_mode`` is "on", or "auto" on CUDA."""
    if compile_mode == "on" or (compile_mode == "auto" and torch.device(device).type == "cuda"):
        return CompiledLogits(model)
    return model
