"""Training precision: ``bf16`` (the seed's and the record's) or ``fp32-master``.

``bf16`` does what both entries' scripts do: the model is cast to bfloat16 and then every
matrix is restored to float32 (the seed: its weight banks and its BigramHash and
value-embedding projections; the record: its banks and every CastedLinear; here: every
:class:`pgolf.model.layers.Linear`), so the optimizers update fp32 masters and only the
forward pass computes in bf16 (each Linear casts its weight to the bf16 activations).
Token embeddings and tables (:class:`pgolf.model.layers.Embedding`) stay bf16, control
tensors (scales, gates, mixes, skip weights) float32; Muon keeps bf16 momentum (and bf16
communication on CUDA). ``fp32-master`` keeps float32 weights and states (bf16 autocast on
CUDA only, see ``train.autocast``). Saved weights are float32 either way. Example::

    apply_precision(model, "bf16")
    state_dtype, comm_dtype = muon_dtypes("bf16", device)
"""

from __future__ import annotations

import torch

from pgolf.errors import ConfigError

PRECISIONS = ("bf16", "fp32-master")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def apply_precision(model: torch.nn.Module, precision: str) -> None:
    """Cast the embeddings (every Embedding's weight) to bf16 for ``bf16``, keeping matrices and
    control tensors fp32; nothing for ``fp32-master``."""
    if check_precision(precision) != "bf16":
        return
    from pgolf.model.layers import Embedding

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, Embedding):
                m.weight.data = m.weight.data.to(torch.bfloat16)


def muon_dtypes(precision: str, device: torch.device) -> tuple[torch.dtype, torch.dtype]:
    """(momentum dtype, communication dtype) of Muon for this precision and device."""
    if check_precision(precision) != "bf16":
        return torch.float32, torch.float32
    return torch.bfloat16, torch.bfloat16 if device.type == "cuda" else torch.float32
