"""Process-group setup for torchrun (NCCL on GPU, gloo on CPU) and small collectives.

Under ``torchrun --nproc_per_node=N -m pgolf train ...`` the environment carries
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`setup` initializes the process group
(NCCL when the device is CUDA, gloo otherwise), picks ``cuda:LOCAL_RANK`` on GPU and
splits the CPU cores between local processes. Without those variables it is a single
process and every collective here is a no-op.

    env = setup("auto")          # DistEnv(rank, world, local_rank, device, backend)
    stop = any_rank(flag, env)   # True on every rank if any rank says so
    teardown(env)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from pgolf import collectives
from pgolf.errors import ConfigError


@dataclass
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    device: torch.device = torch.device("cpu")
    backend: str | None = None
    owns_group: bool = False  # this setup() created the process group (so teardown ends it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def pick_device(pref: str) -> torch.device:
    """"auto" → CUDA when available, else CPU; "cuda" without a GPU is an error."""
    if pref not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"unknown device {pref!r}; choose auto, cpu or cuda")
    if pref == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but no CUDA GPU is available")
    if pref == "cpu" or (pref == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda")


def setup(device_pref: str = "auto", threads: int = 0) -> DistEnv:
    """Read torchrun's variables, init the process group, choose device and CPU threads
    (``threads`` > 0 sets them; 0 splits the cores between the local processes)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    dev = pick_device(device_pref)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
        torch.cuda.set_device(dev)
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 leftovers (bf16 autocast covers the rest)
        torch.backends.cudnn.allow_tf32 = True
    else:
        cores = os.cpu_count() or 1
        torch.set_num_threads(threads if threads > 0 else max(1, cores // max(1, local_world)))
    backend, owns = None, False
    if world > 1:
        import torch.distributed as dist

        backend = "nccl" if dev.type == "cuda" else "gloo"
        if not dist.is_initialized():
            kwargs = {"device_id": dev} if dev.type == "cuda" else {}
            dist.init_process_group(backend=backend, **kwargs)
            owns = True
    return DistEnv(rank, world, local_rank, local_world, dev, backend, owns)


def teardown(env: DistEnv) -> None:
    """Synchronize the ranks; end the process group only if ``setup`` created it, so a
    caller that owns the group (the pipeline) keeps it across stages."""
    if env.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            barrier(env)
            if env.owns_group:
                dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Sum ``t`` over ranks in place (no-op on one process); returns ``t``."""
    return collectives.all_reduce(t) if env.distributed else t


def all_reduce_max(value: float, env: DistEnv) -> float:
    """The maximum of a Python float over ranks (e.g. elapsed time)."""
    return collectives.max_float(value) if env.distributed else value


def any_rank(flag: bool, env: DistEnv) -> bool:
    """True on every rank when ``flag`` is true on any rank (agreed stop)."""
    return all_reduce_max(1.0 if flag else 0.0, env) > 0.0


def barrier(env: DistEnv) -> None:
    if env.distributed:
        collectives.barrier()
