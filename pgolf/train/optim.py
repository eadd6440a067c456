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

    groups = split_params(model, cfg.train)          # by model.param_roles()
    muon = Muon(groups.muon, lr=0.025, ...)
    adam = make_adamw(groups, cfg.train)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

NS_COEFFS = (3.4445, -4.7750, 2.0315)
#: Polar Express (Amsel et al. 2025, arXiv:2505.16932): one (a, b, c) per iteration, the
#: 5-step schedule the record uses, with the input normalized by 1.02 x its norm.
POLAR_EXPRESS = ((8.156554524902461, -22.48329292557795, 15.878769915207462),
                 (4.042929935166739, -2.808917465908714, 0.5000178451051316),
                 (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
                 (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
                 (2.3465413258596377, -1.7097828382687081, 0.42323551169305323))
NS_SCHEDULES = ("quintic", "polar-express")
MUON_ROLES = ("attn", "mlp_up", "mlp_down", "proj")


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


@dataclass
class ParamGroups:
    """Named parameters split by optimizer: Muon matrices, tied embedding, other AdamW."""

    muon: list[tuple[str, torch.nn.Parameter]] = field(default_factory=list)
    embed: list[tuple[str, torch.nn.Parameter]] = field(default_factory=list)
    scalar: list[tuple[str, torch.nn.Parameter]] = field(default_factory=list)


def split_params(model: torch.nn.Module) -> ParamGroups:
    """Route each parameter by ``model.param_roles()``.

    2-D parameters of roles attn/mlp_up/mlp_down/proj go to Muon. The tied token
    embedding (the one ``model.tied_embedding_name()`` names, else the "embed"-role
    parameter of shape (vocab, model_dim), else the first "embed" parameter) gets
    ``embed_lr``; other embedding tables and scalars/control tensors get ``scalar_lr``.
    """
    roles = model.param_roles()
    named = dict(model.named_parameters())
    missing = [n for n in named if n not in roles]
    if missing:
        raise ValueError(f"param_roles() has no role for: {', '.join(missing)}")
    tied = _tied_embedding_name(model, roles, named)
    groups = ParamGroups()
    for name, p in named.items():
        if not p.requires_grad:
            continue
        role = roles[name]
        if role in MUON_ROLES and p.ndim == 2:
            groups.muon.append((name, p))
        elif name == tied:
            groups.embed.append((name, p))
        else:
            groups.scalar.append((name, p))
    return groups


def _tied_embedding_name(model, roles: dict, named: dict) -> str | None:
    if hasattr(model, "tied_embedding_name"):
        return model.tied_embedding_name()
    embeds = [n for n, r in roles.items() if r == "embed" and n in named]
    cfg = getattr(model, "cfg", None)
    if cfg is not None:
        for n in embeds:
            if tuple(named[n].shape) == (cfg.vocab_size, cfg.model_dim):
                return n
    return embeds[0] if embeds else None


def make_adamw(groups: ParamGroups, tcfg) -> torch.optim.AdamW | None:
    """AdamW over the embedding (embed_lr) and scalar/control (scalar_lr) groups."""
    param_groups = []
    if groups.embed:
        param_groups.append({"params": [p for _, p in groups.embed], "lr": tcfg.embed_lr, "base_lr": tcfg.embed_lr})
    if groups.scalar:
        param_groups.append({"params": [p for _, p in groups.scalar], "lr": tcfg.scalar_lr, "base_lr": tcfg.scalar_lr})
    if not param_groups:
        return None
    return torch.optim.AdamW(
        param_groups,
        betas=(tcfg.adam_beta1, tcfg.adam_beta2),
        eps=tcfg.adam_eps,
        weight_decay=tcfg.weight_decay,
        foreach=True,
    )


class _ShapeGroup:
    """Muon matrices of one shape, stacked; rank ``r`` owns slots [r*k, (r+1)*k)."""

    def __init__(self, names, params, world: int, rank: int):
        self.names, self.params = names, params
        self.n = len(params)
        self.k = -(-self.n // world)  # slots per rank
        self.rank, self.world = rank, world
        self.shape = tuple(params[0].shape)
        p0 = params[0]
        self.momentum = torch.zeros((self.k, *self.shape), dtype=torch.float32, device=p0.device)

    def stacked_grads(self) -> torch.Tensor:
        p0 = self.params[0]
        g = torch.zeros((self.k * self.world, *self.shape), dtype=torch.float32, device=p0.device)
        for i, p in enumerate(self.params):
            if p.grad is not None:
                g[i].copy_(p.grad)
        return g


class Muon:
    """Muon over named 2-D parameters, optionally sharded across processes.

    ``step()`` expects each parameter's ``.grad`` to hold this rank's *local* gradient
    sum-of-mean (not yet averaged across ranks): the reduce-scatter averages it.
    Call :meth:`grad_sq_norm` first (for clipping) and pass the clip coefficient.
    """

    def __init__(self, named_params, lr: float, momentum: float, nesterov: bool = True,
                 ns_steps: int = 5, weight_decay: float = 0.0, world: int = 1, rank: int = 0,
                 ns_dtype: torch.dtype = torch.float32, ns_schedule: str = "quintic", row_normalize: bool = False):
        self.lr, self.base_lr, self.momentum = lr, lr, momentum
        self.ns_schedule, self.row_normalize = ns_schedule, row_normalize
        self.nesterov, self.ns_steps, self.weight_decay = nesterov, ns_steps, weight_decay
        self.world, self.rank, self.ns_dtype = world, rank, ns_dtype
        by_shape: dict[tuple, list] = {}
        for name, p in named_params:
            by_shape.setdefault(tuple(p.shape), []).append((name, p))
        self.groups = [
            _ShapeGroup([n for n, _ in items], [p for _, p in items], world, rank)
            for _, items in sorted(by_shape.items())
        ]
        self._shares: list[torch.Tensor] = []

    # ---------------------------------------------------------------- gradients
    def reduce_grads(self) -> None:
        """Average gradients across ranks into this rank's share of each group."""
        self._shares = []
        for grp in self.groups:
            full = grp.stacked_grads()
            if self.world > 1:
                import torch.distributed as dist

                share = torch.empty((grp.k, *grp.shape), dtype=full.dtype, device=full.device)
                dist.reduce_scatter_tensor(share, full)
                share.div_(self.world)
            else:
                share = full
            self._shares.append(share)

    def grad_sq_norm(self) -> torch.Tensor:
        """Squared norm of the averaged Muon gradients, summed over all ranks' shares."""
        if not self._shares:
            self.reduce_grads()
        dev = self.groups[0].momentum.device if self.groups else "cpu"
        total = torch.zeros((), dtype=torch.float32, device=dev)
        for share in self._shares:
            total += share.square().sum()
        if self.world > 1:
            import torch.distributed as dist

            dist.all_reduce(total)
        return total

    # --------------------------------------------------------------------- step
    @torch.no_grad()
    def step(self, grad_scale: float | torch.Tensor = 1.0) -> None:
        if not self._shares:
            self.reduce_grads()
        for grp, share in zip(self.groups, self._shares):
            if not isinstance(grad_scale, float) or grad_scale != 1.0:
                share.mul_(grad_scale)
            buf = grp.momentum
            buf.mul_(self.momentum).add_(share)
            g = share.add(buf, alpha=self.momentum) if self.nesterov else buf
            if self.row_normalize:
                g = normalize_rows(g)
            upd = newton_schulz(g.to(self.ns_dtype), self.ns_steps, schedule=self.ns_schedule).float()
            upd.mul_(math.sqrt(max(1.0, grp.shape[0] / grp.shape[1])))
            full = self._gather(grp, upd)
            for i, p in enumerate(grp.params):
                if self.weight_decay:
                    p.mul_(1.0 - self.lr * self.weight_decay)
                p.add_(full[i].to(p.dtype), alpha=-self.lr)
        self._shares = []

    def _gather(self, grp, share: torch.Tensor) -> torch.Tensor:
        """Every rank's share of a group stacked in rank order (the share itself on one process)."""
        if self.world == 1:
            return share
        import torch.distributed as dist

        full = torch.empty((grp.k * self.world, *grp.shape), dtype=share.dtype, device=share.device)
        dist.all_gather_into_tensor(full, share.contiguous())
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
