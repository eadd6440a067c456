"""Bit allocation by tensor role: which tensor is stored how, at how many bits.

Roles come from ``GPT.param_roles()`` (``embed``, ``attn``, ``mlp_up``, ``mlp_down``,
``proj``, ``control``). The rules (DESIGN.md §6), in order:

1. non-float tensors and names without a role (buffers) are stored exactly (``raw``);
2. ``control`` tensors (scales, gates, mixes) are stored as fp32;
3. tensors of at most ``QuantConfig.fp16_max_numel`` elements, and 1-D tensors, are fp16;
4. everything else is quantized by the scheme: ``turbo`` / ``turbo-prod`` at the role's
   bits (MLP-up ``bits_mlp_up``, MLP-down ``bits_mlp_down``, attention and ``proj``
   ``bits_attn``, embeddings ``bits_embed``), ``int6`` / ``int8`` at 6 / 8 bits.

``--bits role=b`` overrides (parsed by :func:`pgolf.quant.commands.parse_bits_overrides`)
replace a role's bits for any scheme. Quantized tensors are viewed as
``[shape[0], prod(shape[1:])]`` rows. Example::

    plans = plan_state_dict(sd, model.param_roles(), cfg.quant, {"mlp_up": 3})
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Mapping

from pgolf.errors import ConfigError

ROLES = ("embed", "attn", "mlp_up", "mlp_down", "proj", "control")
QUANT_ROLES = ("embed", "attn", "mlp_up", "mlp_down", "proj")
SCHEMES = ("turbo", "turbo-prod", "int6", "int8", "record", "turbo-rd")
#: Schemes stored in compressed groups (pgolf.quant.schemes.grouped, loaded through pgolf.features).
GROUPED_SCHEMES = ("record", "turbo-rd")


@dataclass(frozen=True)
class TensorPlan:
    """How one state-dict entry is stored. ``kind``: turbo | turbo-prod | int | fp16 | fp32 | raw."""

    name: str
    role: str
    shape: tuple[int, ...]
    kind: str
    bits: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def quantized(self) -> bool:
        return self.kind in ("turbo", "turbo-prod", "int", "record", "turbo-rd")

    @property
    def rows(self) -> tuple[int, int]:
        """The ``[rows, d]`` view a quantizer sees."""
        return self.shape[0], self.numel // max(self.shape[0], 1)


def role_bits(qcfg, overrides: Mapping[str, int] | None = None) -> dict[str, int]:
    """Bits per quantized role for ``qcfg.scheme``, with overrides applied and checked."""
    scheme = qcfg.scheme
    if scheme not in SCHEMES:
        raise ConfigError(f"unknown quantization scheme {scheme!r}; choose one of: {', '.join(SCHEMES)}")
    if scheme in ("int6", "int8"):
        bits = {role: int(scheme[3:]) for role in QUANT_ROLES}
    elif scheme == "record":  # the record: int6 matrices, int7 embeddings
        bits = {role: 7 if role == "embed" else 6 for role in QUANT_ROLES}
    elif scheme == "turbo-rd":  # export steps come from rate allocation; these bits are QAT's floor only
        if overrides:
            raise ConfigError("scheme turbo-rd allocates its own rate: use --target-bytes, not --bits")
        return role_bits(dataclasses.replace(qcfg, scheme="turbo"))
    else:
        bits = {
            "embed": qcfg.bits_embed, "attn": qcfg.bits_attn, "proj": qcfg.bits_attn,
            "mlp_up": qcfg.bits_mlp_up, "mlp_down": qcfg.bits_mlp_down,
        }
    bits.update(overrides or {})
    low = {"turbo": 1, "turbo-prod": 2}.get(scheme, 2)
    for role, b in bits.items():
        if not low <= int(b) <= 8:
            raise ConfigError(f"scheme {scheme}: bits for role {role} must be in {low}..8, got {b}")
    return {r: int(b) for r, b in bits.items()}


def plan_tensor(name: str, role: str | None, shape, is_float: bool, qcfg, bits: Mapping[str, int]) -> TensorPlan:
    """The storage plan of one tensor (rules in the module docstring)."""
    shape = tuple(int(s) for s in shape)
    numel = math.prod(shape)
    if not is_float or role is None:
        return TensorPlan(name, role or "buffer", shape, "raw", 0)
    if role not in ROLES:
        raise ConfigError(f"tensor {name}: unknown role {role!r}; expected one of {', '.join(ROLES)}")
    if role == "control":
        return TensorPlan(name, role, shape, "fp32", 32)
    if numel <= qcfg.fp16_max_numel or len(shape) < 2:
        return TensorPlan(name, role, shape, "fp16", 16)
    kind = "int" if qcfg.scheme in ("int6", "int8") else qcfg.scheme
    return TensorPlan(name, role, shape, kind, bits[role])


def plan_state_dict(state_dict, roles: Mapping[str, str], qcfg, overrides: Mapping[str, int] | None = None) -> list[TensorPlan]:
    """Plans for every entry of ``state_dict`` (in its order)."""
    bits = role_bits(qcfg, overrides)
    return [
        plan_tensor(name, roles.get(name), t.shape, t.is_floating_point(), qcfg, bits)
        for name, t in state_dict.items()
    ]
