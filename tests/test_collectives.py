"""pgolf.collectives: every cross-rank operation runs on the process group's device.

A fake NCCL group (a real one-process gloo group whose backend reads "nccl", with
collectives that reject CPU tensors as NCCL does) must only ever see tensors on the
group's device, through every pgolf entry point that reduces; an AST walk keeps every
other module from calling ``torch.distributed``'s collectives itself (issue #18).
Run: ``python -m pytest -q tests/test_collectives.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from pgolf import collectives
from pgolf.train import distributed as dist_util

PKG = Path(__file__).resolve().parents[1] / "pgolf"
COLLECTIVES = {"all_reduce", "reduce_scatter_tensor", "all_gather_into_tensor", "all_gather", "broadcast",
               "broadcast_object_list", "all_gather_object", "barrier", "reduce", "scatter", "gather",
               "all_to_all", "all_to_all_single", "all_gather_single", "reduce_scatter_single", "reduce_scatter", "send", "recv", "isend", "irecv",
               "gather_object", "scatter_object_list"}


class CpuTensorOnNccl(RuntimeError):
    pass


class Reached(Exception):
    """The collective got a tensor on the group's device (the fake stops there)."""


@pytest.fixture
def one_process_group(tmp_path):
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.fixture
def fake_nccl(one_process_group, monkeypatch):
    """Backend reads "nccl"; the group's device stands in as 'meta' (no CUDA on this machine)."""
    seen = []

    def fake(*tensors, **kw):
        for t in tensors:
            if isinstance(t, torch.Tensor):
                seen.append(t.device.type)
                if t.device.type == "cpu":
                    raise CpuTensorOnNccl("No backend type associated with device type cpu")
        raise Reached

    monkeypatch.setattr(dist, "get_backend", lambda *a, **k: "nccl")
    monkeypatch.setattr(collectives, "group_device", lambda: torch.device("meta"))
    for name in ("all_reduce", "reduce_scatter_tensor", "all_gather_into_tensor"):
        monkeypatch.setattr(dist, name, fake)
    return seen


def test_nccl_groups_reduce_on_this_ranks_cuda_device(one_process_group, monkeypatch):
    assert collectives.group_device() == torch.device("cpu")  # gloo
    monkeypatch.setattr(dist, "get_backend", lambda *a, **k: "nccl")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    assert collectives.group_device() == torch.device("cuda", 3)


@pytest.mark.parametrize("call", [
    lambda: collectives.all_reduce(torch.ones(4)),
    lambda: collectives.sum_array(np.ones(4)),
    lambda: collectives.max_float(1.5),
    lambda: collectives.reduce_scatter(torch.zeros(2), torch.ones(2), async_op=True),
    lambda: collectives.all_gather_into(torch.zeros(2), torch.ones(2), async_op=True),
    lambda: dist_util.all_reduce_sum(torch.ones(3), dist_util.DistEnv(rank=0, world=2, device=torch.device("cpu"))),
    lambda: dist_util.any_rank(True, dist_util.DistEnv(rank=0, world=2, device=torch.device("cpu"))),
], ids=["all_reduce", "sum_array", "max_float", "reduce_scatter", "all_gather", "train.all_reduce_sum", "any_rank"])
def test_no_cpu_tensor_reaches_a_cuda_group(fake_nccl, call):
    with pytest.raises(Reached):
        call()
    assert fake_nccl and set(fake_nccl) == {"meta"}


def test_the_fake_group_does_reject_a_cpu_tensor(fake_nccl):
    with pytest.raises(CpuTensorOnNccl):
        dist.all_reduce(torch.ones(2))  # what stream._sum_over_ranks did before pgolf.collectives


def test_one_process_group_values(one_process_group):
    t = torch.arange(4.0)
    assert collectives.all_reduce(t) is t and t.tolist() == [0, 1, 2, 3]
    assert collectives.sum_array(np.arange(3)).tolist() == [0, 1, 2]
    assert collectives.max_float(2.5) == 2.5 and collectives.rank_world() == (0, 1)
    assert collectives.broadcast_object({"a": 1}) == {"a": 1} and collectives.all_gather_object("x") == ["x"]
    out = torch.zeros(3)
    collectives.all_gather_into(out, torch.tensor([1.0, 2.0, 3.0]))
    assert out.tolist() == [1, 2, 3]


def _direct_collective_calls(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in COLLECTIVES:
            base = node.value
            if (isinstance(base, ast.Name) and base.id == "dist") or \
                    (isinstance(base, ast.Attribute) and base.attr == "distributed"):
                found.append(f"{node.attr} (line {node.lineno})")
    return found


def test_no_module_calls_torch_distributed_collectives_itself():
    offenders = {str(p.relative_to(PKG)): calls for p in sorted(PKG.rglob("*.py")) if p.name != "collectives.py"
                 for calls in [_direct_collective_calls(p.read_text())] if calls}
    assert not offenders, f"use pgolf.collectives instead: {offenders}"


def test_the_walk_finds_direct_calls():
    src = "import torch.distributed as dist\ndist.all_reduce(t)\ntorch.distributed.barrier()\nx.all_reduce(y)\n"
    assert _direct_collective_calls(src) == ["all_reduce (line 2)", "barrier (line 3)"]
