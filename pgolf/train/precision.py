"""Training precision: ``bf16`` (the seed's) or ``fp32-master`` (pgolf's research default).

``bf16`` casts every matrix and embedding of the model to bfloat16 (so the residual
stream, activations and the optimizers' updates are bf16), keeps the control tensors
(role ``control``: scales, gates, mixes, skip weights) in float32 as the seed's script
does, and asks Muon for bf16 momentum (and bf16 communication on CUDA). ``fp32-master``
keeps float32 weights and states (bf16 autocast on CUDA only, see ``train.autocast``).
Saved weights are float32 either way. Example::

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
    """Cast the non-control parameters to bf16 for ``bf16``; nothing for ``fp32-master``."""
    if check_precision(precision) != "bf16":
        return
    roles = model.param_roles()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if roles.get(name) != "control" and p.is_floating_point():
                p.data = p.data.to(torch.bfloat16)


def muon_dtypes(precision: str, device: torch.device) -> tuple[torch.dtype, torch.dtype]:
    """(momentum dtype, communication dtype) of Muon for this precision and device."""
    if check_precision(precision) != "bf16":
        return torch.float32, torch.float32
    return torch.bfloat16, torch.bfloat16 if device.type == "cuda" else torch.float32
