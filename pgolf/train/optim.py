"""Optimizers: Muon for the 2-D matrices, AdamW for embeddings and control tensors.

Muon (momentum + orthogonalized update): for each matrix gradient ``G`` keep a momentum
buffer ``B <- mu*B + G``; with Nesterov use ``G + mu*B``; orthogonalize it by five
Newton–Schulz iterations of the quintic ``X <- aX + (bA + cA^2)X``, ``A = XX^T``,
``(a, b, c) = (3.4445, -4.7750, 2.0315)`` (bf16 on CUDA, fp32 on CPU), or the
per-iteration Polar Express coefficients (``ns_schedule``), optionally after dividing
each row by its norm (``row_normalize``, the record's MuonEq-R); scale by
``sqrt(max(1, rows/cols))``; apply decoupled weight decay ``p <- p(1 - lr*wd)`` and
``p <- p - lr*update``. Matrices of equal shape are stacked and processed as a batch.

Across ``world`` processes, each shape group is padded to a multiple of ``world``
matrices; the summed gradients are reduce-scattered so every rank holds the mean
gradient (and the momentum) of its share only, orthogonalizes that share, and the
updates are all-gathered. On one process it is all local. The optimizer does the
gradient averaging itself: no DDP wrapper is needed (see :func:`sync_grads`).

    groups, named = split_params(model, cfg.train)   # the table of cfg.train.optimizer_table
    muon = Muon([(n, named[n]) for n in groups[0].params], lr=0.025, ...)
    adam = make_adamw(groups, named, cfg.train)
"""

from __future__ import annotations

import math

import torch

from pgolf.collectives import all_gather_into, all_reduce, reduce_scatter
from pgolf.train.groups import Group, assign_groups

NS_COEFFS = (3.4445, -4.7750, 2.0315)
#: Polar Express (Amsel et al. 2025, arXiv:2505.16932): one (a, b, c) per iteration, the
#: 5-step schedule the record uses, with the input normalized by 1.02 x its norm.
POLAR_EXPRESS = ((8.156554524902461, -22.48329292557795, 15.878769915207462),
                 (4.042929935166739, -2.808917465908714, 0.5000178451051316),
                 (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
                 (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
                 (2.3465413258596377, -1.7097828382687081, 0.42323551169305323))
NS_SCHEDULES = ("quintic", "polar-express")


def newton_schulz(g: torch.Tensor, steps: int = 5, eps: float = 1e-7, schedule: str = "quintic") -> torch.Tensor:
    """Approximately orthogonalize the last two dims of ``g`` (batched), in g's dtype.

    ``schedule``: "quintic" repeats :data:`NS_COEFFS`; "polar-express" takes
    :data:`POLAR_EXPRESS` row by row (at most 5 steps).
    """
    if schedule == "polar-express":
        if steps > len(POLAR_EXPRESS):
            raise ValueError(f"polar-express has coefficients for at most {len(POLAR_EXPRESS)} steps, got {steps}")
        coeffs, safety = POLAR_EXPRESS[:steps], 1.02
    elif schedule == "quintic":
        coeffs, safety = (NS_COEFFS,) * steps, 1.0
    else:
        raise ValueError(f"unknown Newton-Schulz schedule {schedule!r}; choose one of {', '.join(NS_SCHEDULES)}")
    x = g / (g.norm(dim=(-2, -1), keepdim=True) * safety + eps)
    transpose = g.size(-2) > g.size(-1)
    if transpose:
        x = x.mT
    for a, b, c in coeffs:
        gram = x @ x.mT
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    return x.mT if transpose else x


def normalize_rows(g: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Each row of ``g`` divided by its L2 norm (MuonEq-R, the record's row normalization)."""
    return g / g.float().norm(dim=-1, keepdim=True).clamp_min(eps).to(g.dtype)


def split_params(model: torch.nn.Module, tcfg) -> tuple[list[Group], dict[str, torch.nn.Parameter]]:
    """The optimizer groups of ``tcfg.optimizer_table`` (:mod:`pgolf.train.groups`) over the
    model's trainable parameters, and the name -> parameter map they refer to."""
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    tied = bool(getattr(getattr(model, "cfg", None), "tie_embeddings", True))
    groups = assign_groups(named, tcfg, tied)
    if sum(g.optimizer == "muon" for g in groups) > 1:
        raise ValueError("at most one Muon group is supported")
    return groups, named


def make_adamw(groups: list[Group], named: dict, tcfg, fused: bool = False) -> torch.optim.AdamW | None:
    """One AdamW over the table's AdamW groups, each at its own lr and weight decay
    (``fused`` kernels on CUDA, ``foreach`` otherwise)."""
    param_groups = [
        {"params": [named[n] for n in g.params], "lr": g.lr, "base_lr": g.lr, "weight_decay": g.weight_decay,
         "name": g.name}
        for g in groups if g.optimizer == "adamw"
    ]
    if not param_groups:
        return None
    return torch.optim.AdamW(param_groups, betas=(tcfg.adam_beta1, tcfg.adam_beta2), eps=tcfg.adam_eps,
                             **({"fused": True} if fused else {"foreach": True}))


class _ShapeGroup:
    """Muon matrices of one shape, stacked; rank ``r`` owns slots [r*k, (r+1)*k).

    Every buffer is allocated once here: the stacked gradients and the gathered updates
    in the communication dtype, this rank's gradient/update share, and the momentum in
    the state dtype (bf16 for the seed's precision).
    """

    def __init__(self, names, params, world: int, rank: int, state_dtype, comm_dtype):
        self.names, self.params = names, params
        self.n = len(params)
        self.k = -(-self.n // world)  # slots per rank
        self.rank, self.world = rank, world
        self.shape = tuple(params[0].shape)
        dev = params[0].device
        self.momentum = torch.zeros((self.k, *self.shape), dtype=state_dtype, device=dev)
        self.grads = torch.zeros((self.k * world, *self.shape), dtype=comm_dtype, device=dev)
        self.share = self.grads if world == 1 else torch.zeros((self.k, *self.shape), dtype=comm_dtype, device=dev)
        self.update = torch.zeros((self.k, *self.shape), dtype=comm_dtype, device=dev)
        self.updates = self.update if world == 1 else torch.zeros_like(self.grads)

    def fill_grads(self) -> None:
        for i, p in enumerate(self.params):
            if p.grad is None:
                self.grads[i].zero_()
            else:
                self.grads[i].copy_(p.grad)


class Muon:
    """Muon over named 2-D parameters, optionally sharded across processes.

    ``step()`` expects each parameter's ``.grad`` to hold this rank's *local* gradient
    sum-of-mean (not yet averaged across ranks): the reduce-scatter averages it.
    Call :meth:`grad_sq_norm` first (for clipping) and pass the clip coefficient.
    Communication is asynchronous: :meth:`reduce_grads` launches every group's
    reduce-scatter at once, and :meth:`step` launches each group's all-gather as soon as
    its Newton–Schulz is done, so the next group's orthogonalization overlaps it.
    ``state_dtype`` / ``comm_dtype``: momentum and communication buffers (bf16 for the
    seed's precision, float32 for fp32-master).
    """

    def __init__(self, named_params, lr: float, momentum: float, nesterov: bool = True,
                 ns_steps: int = 5, weight_decay: float = 0.0, world: int = 1, rank: int = 0,
                 ns_dtype: torch.dtype = torch.float32, state_dtype: torch.dtype = torch.float32,
                 comm_dtype: torch.dtype = torch.float32, ns_schedule: str = "quintic", row_normalize: bool = False):
        self.lr, self.base_lr, self.momentum = lr, lr, momentum
        self.ns_schedule, self.row_normalize = ns_schedule, row_normalize
        self.nesterov, self.ns_steps, self.weight_decay = nesterov, ns_steps, weight_decay
        self.world, self.rank, self.ns_dtype = world, rank, ns_dtype
        by_shape: dict[tuple, list] = {}
        for name, p in named_params:
            by_shape.setdefault(tuple(p.shape), []).append((name, p))
        self.groups = [
            _ShapeGroup([n for n, _ in items], [p for _, p in items], world, rank, state_dtype, comm_dtype)
            for _, items in sorted(by_shape.items())
        ]
        self._pending: list | None = None  # reduce-scatter handles (None: not launched)

    # ---------------------------------------------------------------- gradients
    def reduce_grads(self) -> None:
        """Launch the averaging of gradients across ranks into each group's share."""
        self._pending = []
        for grp in self.groups:
            grp.fill_grads()
            handle = None
            if self.world > 1:
                handle = reduce_scatter(grp.share, grp.grads, async_op=True)
            self._pending.append(handle)

    def _share(self, i: int) -> torch.Tensor:
        """Group ``i``'s averaged gradient share (waits for its reduce-scatter once)."""
        handle = self._pending[i]
        grp = self.groups[i]
        if handle is not None:
            handle.wait()
            grp.share.div_(self.world)
            self._pending[i] = None
        return grp.share

    def grad_sq_norm(self) -> torch.Tensor:
        """Squared norm of the averaged Muon gradients, summed over all ranks' shares."""
        if self._pending is None:
            self.reduce_grads()
        dev = self.groups[0].momentum.device if self.groups else "cpu"
        total = torch.zeros((), dtype=torch.float32, device=dev)
        for i in range(len(self.groups)):
            total += self._share(i).float().square().sum()
        return all_reduce(total) if self.world > 1 else total

    # --------------------------------------------------------------------- step
    @torch.no_grad()
    def step(self, grad_scale: float | torch.Tensor = 1.0) -> None:
        if self._pending is None:
            self.reduce_grads()
        gathers = []
        for i, grp in enumerate(self.groups):
            g = self._share(i).float()
            if not isinstance(grad_scale, float) or grad_scale != 1.0:
                g.mul_(grad_scale)
            buf = grp.momentum
            buf.mul_(self.momentum).add_(g.to(buf.dtype))
            g = g.add(buf.float(), alpha=self.momentum) if self.nesterov else buf.float()
            if self.row_normalize:
                g = normalize_rows(g)
            upd = newton_schulz(g.to(self.ns_dtype), self.ns_steps, schedule=self.ns_schedule)
            grp.update.copy_(upd.float().mul_(math.sqrt(max(1.0, grp.shape[0] / grp.shape[1]))))
            gathers.append(self._launch_gather(grp))
        for grp, handle in zip(self.groups, gathers):
            if handle is not None:
                handle.wait()
            for i, p in enumerate(grp.params):
                if self.weight_decay:
                    p.mul_(1.0 - self.lr * self.weight_decay)
                p.add_(grp.updates[i].to(p.dtype), alpha=-self.lr)
        self._pending = None

    def _launch_gather(self, grp):
        """Start all-gathering every rank's update share into ``grp.updates`` (None on one process)."""
        return None if self.world == 1 else all_gather_into(grp.updates, grp.update, async_op=True)

    def _gather(self, grp, share: torch.Tensor) -> torch.Tensor:
        """Every rank's share of a group stacked in rank order (the share itself on one process)."""
        if self.world == 1:
            return share
        full = torch.empty((grp.k * self.world, *grp.shape), dtype=share.dtype, device=share.device)
        all_gather_into(full, share)
        return full

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Full (un-sharded) momentum per parameter name; identical on every rank."""
        out = {}
        for grp in self.groups:
            full = self._gather(grp, grp.momentum)
            for i, name in enumerate(grp.names):
                out[name] = full[i].detach().cpu().clone()
        return {"momentum_buffers": out, "lr": self.lr, "momentum": self.momentum}

    def load_state_dict(self, state: dict) -> None:
        bufs = state["momentum_buffers"]
        for grp in self.groups:
            for slot in range(grp.k):
                i = grp.rank * grp.k + slot
                if i < grp.n:
                    grp.momentum[slot].copy_(bufs[grp.names[i]])
                else:
                    grp.momentum[slot].zero_()
        self.lr, self.momentum = state["lr"], state["momentum"]
