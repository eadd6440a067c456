"""Quantization-aware training: fake-quant modules on every weight that will be quantized.

Lifecycle (torchao-style): :func:`prepare_qat` attaches a fake-quant module to the
``qat`` hook of every :class:`pgolf.model.layers.Linear` / ``Embedding`` whose weight the
bit allocation (:mod:`pgolf.quant.allocation`) quantizes -- all attention and MLP
matrices, embeddings and large projections; :func:`update_qat` is called every step
with the lr scale and switches the progressive schedule of ``QuantConfig.qat_schedule``
(lr scale > 0.5: off; <= 0.5: 4 bits; <= 0.3: 3 bits; <= 0.15: 2 bits; never below a
tensor's own target bits) by *writing buffer values only*: each module holds a padded
table of its codebooks, a mode index and an on/off flag as tensors, so a compiled graph
(``torch.compile(fullgraph=True)``) never breaks or recompiles when the schedule moves.
Gradients pass straight through (STE). :func:`remove_qat` detaches the modules.

    prepare_qat(model, cfg.quant)           # before torch.compile
    update_qat(model, lr_scale, cfg.quant)  # each step, outside the compiled code
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from pgolf.quant import rowint, turbo
from pgolf.quant.allocation import plan_tensor, role_bits
from pgolf.quant.rotation import qjl_tensor, rotation_tensor


def _int_clip(qcfg) -> float:
    return float(qcfg.int_clip)


class TurboFakeQuant(nn.Module):
    """TurboQuant fake quantization of a ``[rows, d]`` weight with switchable bits."""

    def __init__(self, d: int, target_bits: int, qcfg, device, prod: bool = False):
        super().__init__()
        self.target_bits, self.prod = int(target_bits), bool(prod)
        self.bit_modes = schedule_bits(qcfg, self.target_bits)
        mse_bits = [b - 1 if prod else b for b in self.bit_modes]
        width = 1 << max(mse_bits)
        levels = torch.empty(len(mse_bits), width)
        thresholds = torch.full((len(mse_bits), width - 1), float("inf"))
        for i, b in enumerate(mse_bits):
            lv = turbo.codebook_tensor(b, d, qcfg.codebook)
            levels[i] = torch.cat([lv, lv[-1:].expand(width - lv.numel())])
            thresholds[i, : lv.numel() - 1] = turbo.thresholds_of(lv)
        self.register_buffer("rot", rotation_tensor(qcfg.rotation, qcfg.rotation_seed, d, device), persistent=False)
        if prod:
            self.register_buffer("sketch", qjl_tensor(qcfg.rotation_seed, d, device), persistent=False)
        self.register_buffer("levels", levels.to(device), persistent=False)
        self.register_buffer("thresholds", thresholds.to(device), persistent=False)
        self.register_buffer("mode", torch.zeros((), dtype=torch.long, device=device), persistent=False)
        self.register_buffer("enabled", torch.zeros((), dtype=torch.bool, device=device), persistent=False)

    def quantized(self, w: torch.Tensor) -> torch.Tensor:
        """The dequantized weight at the current mode (float32, no gradient semantics)."""
        lv = self.levels.index_select(0, self.mode.view(1)).squeeze(0)
        thr = self.thresholds.index_select(0, self.mode.view(1)).squeeze(0)
        with torch.autocast(device_type=w.device.type, enabled=False):
            wf = w.float().reshape(w.shape[0], -1)
            if self.prod:
                w_hat = turbo.roundtrip_prod(wf, self.rot.float(), lv, thr, self.sketch.float())
            else:
                w_hat = turbo.roundtrip_mse(wf, self.rot.float(), lv, thr)
        return w_hat.reshape(w.shape)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return torch.where(self.enabled, turbo.straight_through(w, self.quantized(w)), w)

    def extra_repr(self) -> str:
        return f"d={self.rot.shape[0]}, target_bits={self.target_bits}, modes={self.bit_modes}, prod={self.prod}"


class IntFakeQuant(nn.Module):
    """Per-row symmetric integer fake quantization (int6/int8 baselines)."""

    def __init__(self, target_bits: int, qcfg, device):
        super().__init__()
        self.target_bits, self.clip = int(target_bits), _int_clip(qcfg)
        self.bit_modes = [self.target_bits]
        qmax = float(rowint.qmax_of(self.target_bits))
        self.register_buffer("qmax", torch.tensor(qmax, device=device), persistent=False)
        self.register_buffer("mode", torch.zeros((), dtype=torch.long, device=device), persistent=False)
        self.register_buffer("enabled", torch.zeros((), dtype=torch.bool, device=device), persistent=False)

    def quantized(self, w: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=w.device.type, enabled=False):
            wf = w.float().reshape(w.shape[0], -1)
            return rowint.roundtrip_rows(wf, self.qmax, self.clip).reshape(w.shape)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return torch.where(self.enabled, turbo.straight_through(w, self.quantized(w)), w)


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
            owner.qat = IntFakeQuant(plan.bits, qcfg, p.device)
        elif plan.kind in ("record", "turbo-rd"):
            from pgolf.quant.qat_grids import grid_fake_quant

            owner.qat = grid_fake_quant(plan, qcfg, p.device)
        else:
            owner.qat = TurboFakeQuant(plan.rows[1], plan.bits, qcfg, p.device, prod=plan.kind == "turbo-prod")
    model._qat_unhooked = unhooked
    if unhooked:
        warnings.warn("QAT cannot reach these quantized weights (no qat hook): " + ", ".join(unhooked))


def fake_quant_modules(model: nn.Module):
    """``(owner name, fake-quant module)`` pairs attached by :func:`prepare_qat`."""
    for name, mod in model.named_modules():
        q = getattr(mod, "qat", None)
        if isinstance(q, (TurboFakeQuant, IntFakeQuant)) or getattr(q, "is_fake_quant", False):
            yield name, q


def update_qat(model: nn.Module, lr_scale: float, qcfg) -> None:
    """Move every fake-quant module to the schedule's bits for ``lr_scale`` (buffer writes only)."""
    for _, q in fake_quant_modules(model):
        b = bits_at(float(lr_scale), qcfg, q.target_bits)
        q.enabled.fill_(b is not None)
        if b is not None:
            q.mode.fill_(q.bit_modes.index(b))


def qat_state(model: nn.Module) -> dict[str, int | None]:
    """Current bits per hooked module (None when off); reads buffers, for logs and tests."""
    return {n: (q.bit_modes[int(q.mode)] if bool(q.enabled) else None) for n, q in fake_quant_modules(model)}


def remove_qat(model: nn.Module) -> None:
    """Detach all fake-quant modules (the model then uses its raw weights)."""
    for name, _ in list(fake_quant_modules(model)):
        model.get_submodule(name).qat = None
