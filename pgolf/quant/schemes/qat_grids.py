"""Fake quantization on the ``record`` and ``turbo-rd`` grids, for QAT (:mod:`pgolf.quant.schemes.qat`).

QAT trains against the quantizer the weights will be exported with, using the
exporter's own functions (round to nearest; GPTQ's error feedback runs at export only):
``record`` rounds to its per-row ints with scale ``k * row_std / qmax`` at the tensor's
width (:mod:`pgolf.quant.schemes.record`); ``turbo-rd`` rounds the rotated unit rows to a
uniform step chosen per schedule width ``b`` so that a coordinate carries about ``b``
bits of entropy (:func:`pgolf.quant.schemes.turbo_rd.qat_step`; the export step comes later
from rate allocation). Example::

    owner.qat = grid_fake_quant(weight, plan, cfg.quant)
"""

from __future__ import annotations

import torch

from pgolf.quant.schemes import record, turbo_rd
from pgolf.quant.calibrate.gptq import IntGrid, gptq
from pgolf.quant.schemes.qat import _FakeQuant, schedule_bits


class RecordFakeQuant(_FakeQuant):
    """The ``record`` grid (per-row int, scale ``k * row_std / qmax``) at a fixed width."""

    def __init__(self, weight: torch.Tensor, target_bits: int, role: str):
        super().__init__(weight, target_bits, [int(target_bits)])
        self.k = record.K_ROLE[role]

    def quantized(self, w: torch.Tensor) -> torch.Tensor:
        wf = w.float().reshape(w.shape[0], -1)
        scales = record.row_scales(wf, self.target_bits, self.k)
        codes = gptq(wf, None, scales, IntGrid(record.qmax_of(self.target_bits)))
        return record.dequantize(codes, scales).reshape(w.shape)


class TurboRDFakeQuant(_FakeQuant):
    """The ``turbo-rd`` grid (rotated uniform steps), one step per schedule width."""

    def __init__(self, weight: torch.Tensor, d: int, target_bits: int, qcfg):
        super().__init__(weight, target_bits, schedule_bits(qcfg, int(target_bits)))
        self.rot = turbo_rd.rotation_of(qcfg, d).to(weight.device)
        self.steps = [turbo_rd.qat_step(b, d) for b in self.bit_modes]

    def quantized(self, w: torch.Tensor) -> torch.Tensor:
        wf = w.float().reshape(w.shape[0], -1)
        return turbo_rd.round_trip(wf, self.rot, self.steps[self.mode]).reshape(w.shape)


def grid_fake_quant(weight: torch.Tensor, plan, qcfg) -> _FakeQuant:
    """The fake-quant module for a ``record`` / ``turbo-rd`` tensor plan."""
    if plan.kind == "record":
        return RecordFakeQuant(weight, plan.bits, plan.role)
    return TurboRDFakeQuant(weight, plan.rows[1], plan.bits, qcfg)
