"""Quantization-aware training: fake-quant modules on every weight that will be quantized.

Lifecycle (torchao-style): :func:`prepare_qat` attaches a fake-quant module to the
``qat`` hook of every :class:`pgolf.model.layers.Linear` / ``Embedding`` whose weight the
bit allocation (:mod:`pgolf.quant.calibrate.allocation`) quantizes -- all attention and MLP
matrices, embeddings and large projections; :func:`update_qat` is called once per
optimizer step (outside the compiled graph) with the lr scale and follows the
progressive schedule of ``QuantConfig.qat_schedule`` (lr scale > 0.5: off; <= 0.5: 4
bits; <= 0.3: 3 bits; <= 0.15: 2 bits; never below a tensor's own target bits). While
QAT is on it quantizes each weight once with the exporter's own functions (no TF32), so
the indices chosen in training are the artifact's; while it is off it does nothing. The
forward pass only selects, by an on/off buffer, between the stored quantized weight
(with a straight-through add) and the raw weight, so a compiled graph
(``torch.compile(fullgraph=True)``) never breaks or recompiles when the schedule moves.
Gradients pass straight through (STE). :func:`remove_qat` detaches the modules.

    prepare_qat(model, cfg.quant)           # before torch.compile
    update_qat(model, lr_scale, cfg.quant)  # each step, outside the compiled code
"""

from __future__ import annotations

import contextlib
import warnings

import torch
from torch import nn

from pgolf.quant.schemes import rowint, turbo
from pgolf.quant.calibrate.allocation import plan_tensor, role_bits
from pgolf.quant.schemes.rotation import qjl_tensor, rotation_tensor


@contextlib.contextmanager
def _exact_fp32():
    """No TF32 in the rotation matmuls, so training picks the exporter's indices."""
    cuda = torch.backends.cuda.matmul
    old = cuda.allow_tf32
    cuda.allow_tf32 = False
    try:
        yield
    finally:
        cuda.allow_tf32 = old


class _FakeQuant(nn.Module):
    """Shared state: the quantized weight of the current mode (refreshed once per optimizer
    step by :meth:`refresh`) and an on/off flag, both buffers read by :meth:`forward`."""

    def __init__(self, weight: torch.Tensor, target_bits: int, bit_modes: list[int]):
        super().__init__()
        self.target_bits, self.bit_modes, self.mode = int(target_bits), bit_modes, 0
        self.register_buffer("qweight", torch.zeros_like(weight, requires_grad=False), persistent=False)
        self.register_buffer("enabled", torch.zeros((), dtype=torch.bool, device=weight.device), persistent=False)
        self.is_on = False  # host copy of ``enabled``: no device read to decide anything

    def quantized(self, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def refresh(self, w: torch.Tensor) -> None:
        """Quantize ``w`` at the current mode into ``qweight`` (outside any compiled graph)."""
        with _exact_fp32():
            self.qweight.copy_(self.quantized(w.detach()).to(self.qweight.dtype))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """``qweight`` with a straight-through gradient when on, ``w`` when off (no recompile)."""
        return torch.where(self.enabled, self.qweight + (w - w.detach()), w)


class TurboFakeQuant(_FakeQuant):
    """TurboQuant fake quantization of a ``[rows, d]`` weight with switchable bits, by the
    exporter's own encode/decode (:func:`pgolf.quant.schemes.turbo.quantize_mse` and friends)."""

    def __init__(self, weight: torch.Tensor, d: int, target_bits: int, qcfg, prod: bool = False):
        super().__init__(weight, target_bits, schedule_bits(qcfg, int(target_bits)))
        self.prod, self.d, device = bool(prod), d, weight.device
        self.rot = rotation_tensor(qcfg.rotation, qcfg.rotation_seed, d, device)
        self.sketch = qjl_tensor(qcfg.rotation_seed, d, device) if prod else None
        self.levels = [turbo.codebook_tensor(b - 1 if prod else b, d, qcfg.codebook).to(device) for b in self.bit_modes]

    def quantized(self, w: torch.Tensor) -> torch.Tensor:
        """The exporter's dequantized weight at the current mode (float32)."""
        wf = w.float().reshape(w.shape[0], -1)
        lv = self.levels[self.mode]
        if self.prod:
            w_hat = turbo.dequantize_prod(*turbo.quantize_prod(wf, self.rot, lv, self.sketch), self.rot, lv, self.sketch)
        else:
            w_hat = turbo.dequantize_mse(*turbo.encode_mse(wf, self.rot, lv), self.rot, lv)
        return w_hat.reshape(w.shape)

    def extra_repr(self) -> str:
        return f"d={self.d}, target_bits={self.target_bits}, modes={self.bit_modes}, prod={self.prod}"


class IntFakeQuant(_FakeQuant):
    """Per-row symmetric integer fake quantization (int6/int8 baselines), by the exporter's
    :func:`pgolf.quant.schemes.rowint.quantize_rows`."""

    def __init__(self, weight: torch.Tensor, target_bits: int, qcfg):
        super().__init__(weight, target_bits, [int(target_bits)])
        self.clip = float(qcfg.int_clip)

    def quantized(self, w: torch.Tensor) -> torch.Tensor:
        wf = w.float().reshape(w.shape[0], -1)
        return rowint.dequantize_rows(*rowint.quantize_rows(wf, self.target_bits, self.clip)).reshape(w.shape)


def schedule_bits(qcfg, target_bits: int) -> list[int]:
    """Distinct bit widths a tensor with ``target_bits`` passes through (descending)."""
    bits = {max(int(b), target_bits) for _, b in qcfg.qat_schedule} | {target_bits}
    return sorted(bits, reverse=True)


def bits_at(lr_scale: float, qcfg, target_bits: int) -> int | None:
    """Bits to fake-quantize at for this lr scale, or None (QAT off)."""
    passed = [int(b) for thr, b in sorted(qcfg.qat_schedule, reverse=True) if lr_scale <= thr]
    if not passed:
        return None
    if qcfg.scheme in ("int6", "int8", "record"):
        return target_bits
    return max(passed[-1], target_bits)


def _owner(model: nn.Module, name: str):
    mod_name, _, attr = name.rpartition(".")
    try:
        mod = model.get_submodule(mod_name) if mod_name else model
    except AttributeError:
        return None
    return mod if attr == "weight" and hasattr(mod, "qat") else None


def prepare_qat(model: nn.Module, qcfg, bits_overrides=None) -> None:
    """Attach a fake-quant module to every weight the allocation quantizes (shared rotations)."""
    roles = model.param_roles()
    bits = role_bits(qcfg, bits_overrides)
    unhooked = []
    for name, p in model.named_parameters():
        plan = plan_tensor(name, roles.get(name), p.shape, p.is_floating_point(), qcfg, bits)
        if not plan.quantized:
            continue
        owner = _owner(model, name)
        if owner is None:
            unhooked.append(name)
            continue
        if plan.kind == "int":
            owner.qat = IntFakeQuant(p, plan.bits, qcfg)
        elif plan.kind in ("record", "turbo-rd"):
            from pgolf import features

            owner.qat = features.load("quant.scheme", plan.kind).grid_fake_quant(p, plan, qcfg)
        else:
            owner.qat = TurboFakeQuant(p, plan.rows[1], plan.bits, qcfg, prod=plan.kind == "turbo-prod")
    model._qat_unhooked = unhooked
    if unhooked:
        warnings.warn("QAT cannot reach these quantized weights (no qat hook): " + ", ".join(unhooked))


def fake_quant_modules(model: nn.Module):
    """``(owner name, fake-quant module)`` pairs attached by :func:`prepare_qat`."""
    for name, mod in model.named_modules():
        q = getattr(mod, "qat", None)
        if isinstance(q, _FakeQuant):
            yield name, q


def update_qat(model: nn.Module, lr_scale: float, qcfg) -> None:
    """Once per optimizer step: move every fake-quant module to the schedule's bits for
    ``lr_scale`` and, where QAT is on, quantize its weight (the weights do not change
    between micro-batches). While QAT stays off this does no work at all."""
    for name, q in fake_quant_modules(model):
        b = bits_at(float(lr_scale), qcfg, q.target_bits)
        was_on = q.is_on
        q.is_on = b is not None
        if q.is_on:
            q.mode = q.bit_modes.index(b)
            q.refresh(model.get_submodule(name).weight)
        if q.is_on != was_on:
            q.enabled.fill_(q.is_on)


def qat_state(model: nn.Module) -> dict[str, int | None]:
    """Current bits per hooked module (None when off), for logs and tests."""
    return {n: (q.bit_modes[q.mode] if q.is_on else None) for n, q in fake_quant_modules(model)}


def remove_qat(model: nn.Module) -> None:
    """Detach all fake-quant modules (the model then uses its raw weights)."""
    for name, _ in list(fake_quant_modules(model)):
        model.get_submodule(name).qat = None
