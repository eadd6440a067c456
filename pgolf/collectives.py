"""Collectives on the process group's device: every cross-rank operation pgolf makes.

An NCCL group takes CUDA tensors only, a gloo group CPU tensors. Each function here
stages a tensor that is on the other device onto the group's device (:func:`group_device`),
runs the collective there and copies the result back, so a caller can never hand a CPU
tensor to a CUDA group (issue #18). With no process group each one is the one-process
identity. tests/test_collectives.py fakes an NCCL group that rejects CPU tensors, and walks
pgolf's source so that no other module calls ``torch.distributed``'s collectives itself.
"""

from __future__ import annotations

import torch


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def rank_world() -> tuple[int, int]:
    """(rank, world size) of the process group; (0, 1) without one."""
    d = _dist()
    return (d.get_rank(), d.get_world_size()) if d else (0, 1)


def group_device() -> torch.device:
    """The device the group's backend reduces on: this rank's CUDA device for NCCL, else CPU."""
    d = _dist()
    if d and d.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _on_group(t: torch.Tensor) -> torch.Tensor:
    dev = group_device()
    return t if t.device == dev else t.to(dev)


def all_reduce(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Reduce ``t`` over ranks in place (``op``: sum or max); returns ``t``."""
    d = _dist()
    if d:
        x = _on_group(t)
        d.all_reduce(x, op=d.ReduceOp.MAX if op == "max" else d.ReduceOp.SUM)
        if x is not t:
            t.copy_(x)
    return t


def sum_array(a):
    """A numpy array summed over ranks (a new array; exact for integers and disjoint floats)."""
    return all_reduce(torch.from_numpy(a.copy())).numpy()


def max_float(v: float) -> float:
    return float(all_reduce(torch.tensor([v], dtype=torch.float64), "max").item())


def _two(fn, out: torch.Tensor, inp: torch.Tensor, async_op: bool):
    """``fn(out, inp)`` on the group's device; a handle only when async and nothing was staged."""
    o, i = _on_group(out), _on_group(inp.contiguous())
    handle = fn(o, i, async_op=async_op and o is out)
    if o is not out:
        out.copy_(o)
    return handle


def reduce_scatter(out: torch.Tensor, inp: torch.Tensor, async_op: bool = False):
    """Sum ``inp`` over ranks and keep this rank's slice in ``out`` (a handle, or None when done)."""
    d = _dist()
    return _two(d.reduce_scatter_tensor, out, inp, async_op) if d else None


def all_gather_into(out: torch.Tensor, inp: torch.Tensor, async_op: bool = False):
    """Every rank's ``inp`` stacked in rank order into ``out`` (a handle, or None when done)."""
    d = _dist()
    return _two(d.all_gather_into_tensor, out, inp, async_op) if d else None


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s picklable ``obj`` on every rank (never used on artifact bytes)."""
    d = _dist()
    if not d:
        return obj
    box = [obj]
    d.broadcast_object_list(box, src=src, device=group_device())
    return box[0]


def all_gather_object(obj) -> list:
    d = _dist()
    if not d:
        return [obj]
    out = [None] * d.get_world_size()
    d.all_gather_object(out, obj)
    return out


def barrier() -> None:
    d = _dist()
    if d:
        d.barrier()
