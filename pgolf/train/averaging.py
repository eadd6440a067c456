"""Weight averaging: an exponential moving average (EMA) and stochastic weight averaging (SWA).

EMA keeps fp32 copies ``e <- d*e + (1-d)*w`` after every optimizer step (decay ``d``,
0.997 in the seed recipe). SWA sums snapshots of the weights taken every ``swa_every``
steps once the lr scale has fallen below ``swa_lr_threshold`` and averages them.
Both cover floating-point parameters and buffers of the model's ``state_dict`` keys
they are given, save/restore through plain tensor dicts (checkpoint-safe), and can be
written into a model with :meth:`apply_to`.

    ema = EMA(model.state_dict(), decay=0.997)
    ema.update(model.state_dict())       # after each step
    ema.apply_to(model)                  # at the end
"""

from __future__ import annotations

import torch


def _float_items(state: dict) -> dict:
    return {k: v for k, v in state.items() if torch.is_floating_point(v)}


class EMA:
    """Exponential moving average of the floating-point entries of a state dict."""

    def __init__(self, state: dict, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().float().clone() for k, v in _float_items(state).items()}

    @torch.no_grad()
    def update(self, state: dict) -> None:
        keys = list(self.shadow)
        cur = [state[k].detach().float() for k in keys]
        torch._foreach_lerp_([self.shadow[k] for k in keys], cur, 1.0 - self.decay)

    def averaged(self) -> dict:
        return self.shadow

    @torch.no_grad()
    def apply_to(self, model: torch.nn.Module) -> None:
        _write(model, self.shadow)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": {k: v.cpu() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.decay = state["decay"]
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)


class SWA:
    """Uniform average of weight snapshots (sum + count)."""

    def __init__(self, state: dict):
        self.total = {k: torch.zeros_like(v, dtype=torch.float32) for k, v in _float_items(state).items()}
        self.count = 0

    @torch.no_grad()
    def add(self, state: dict) -> None:
        for k, t in self.total.items():
            t.add_(state[k].detach().float())
        self.count += 1

    def averaged(self) -> dict:
        if not self.count:
            raise ValueError("SWA has no snapshots")
        return {k: t / self.count for k, t in self.total.items()}

    @torch.no_grad()
    def apply_to(self, model: torch.nn.Module) -> None:
        _write(model, self.averaged())

    def state_dict(self) -> dict:
        return {"count": self.count, "total": {k: v.cpu() for k, v in self.total.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.count = int(state["count"])
        for k, v in state["total"].items():
            self.total[k].copy_(v)


@torch.no_grad()
def _write(model: torch.nn.Module, values: dict) -> None:
    own = model.state_dict()
    for k, v in values.items():
        own[k].copy_(v.to(own[k].dtype))
