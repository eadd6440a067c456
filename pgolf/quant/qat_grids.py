"""Fake quantization on the ``record`` and ``turbo-rd`` grids, for QAT (:mod:`pgolf.quant.qat`).

QAT trains against the quantizer the weights will be exported with: ``record`` rounds to
its per-row ints with scale ``k * row_std / qmax`` at the tensor's width; ``turbo-rd``
rounds the rotated unit rows to a uniform step chosen per schedule width ``b`` so that a
coordinate carries about ``b`` bits of entropy (:func:`pgolf.quant.turbo_rd.qat_step`;
the export step comes later from rate allocation). Both switch by buffer writes only and
pass gradients straight through. Example::

    owner.qat = grid_fake_quant(plan, cfg.quant, device)
"""

from __future__ import annotations

import torch
from torch import nn

from pgolf.quant import record, turbo_rd
from pgolf.quant.rotation import rotation_tensor
from pgolf.quant.turbo import straight_through


class _GridFakeQuant(nn.Module):
    """Shared buffers and the straight-through forward."""

    is_fake_quant = True

    def _flags(self, device) -> None:
        self.register_buffer("mode", torch.zeros((), dtype=torch.long, device=device), persistent=False)
        self.register_buffer("enabled", torch.zeros((), dtype=torch.bool, device=device), persistent=False)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return torch.where(self.enabled, straight_through(w, self.quantized(w)), w)


class RecordFakeQuant(_GridFakeQuant):
    """The ``record`` grid (per-row int, scale ``k * row_std / qmax``) with a fixed width."""

    def __init__(self, target_bits: int, role: str, device):
        super().__init__()
        self.target_bits, self.k = int(target_bits), record.K_ROLE[role]
        self.bit_modes = [self.target_bits]
        self.register_buffer("qmax", torch.tensor(float(record.qmax_of(target_bits)), device=device), persistent=False)
        self._flags(device)

    def quantized(self, w: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=w.device.type, enabled=False):
            wf = w.float().reshape(w.shape[0], -1)
            return record.roundtrip(wf, self.qmax, self.k).reshape(w.shape)


class TurboRDFakeQuant(_GridFakeQuant):
    """The ``turbo-rd`` grid (rotated uniform steps), one step per schedule width."""

    def __init__(self, d: int, target_bits: int, qcfg, device):
        from pgolf.quant.qat import schedule_bits

        super().__init__()
        self.target_bits = int(target_bits)
        self.bit_modes = schedule_bits(qcfg, self.target_bits)
        steps = torch.tensor([turbo_rd.qat_step(b, d) for b in self.bit_modes])
        self.register_buffer("rot", rotation_tensor(qcfg.rotation, qcfg.rotation_seed, d, device), persistent=False)
        self.register_buffer("steps", steps.to(device), persistent=False)
        self._flags(device)

    def quantized(self, w: torch.Tensor) -> torch.Tensor:
        step = self.steps.index_select(0, self.mode.view(1))
        with torch.autocast(device_type=w.device.type, enabled=False):
            wf = w.float().reshape(w.shape[0], -1)
            return turbo_rd.roundtrip(wf, self.rot.float(), step).reshape(w.shape)


def grid_fake_quant(plan, qcfg, device) -> nn.Module:
    """The fake-quant module for a ``record`` / ``turbo-rd`` tensor plan."""
    if plan.kind == "record":
        return RecordFakeQuant(plan.bits, plan.role, device)
    return TurboRDFakeQuant(plan.rows[1], plan.bits, qcfg, device)
