"""train.precision=bf16 as both entries run it: the model cast to bf16, then fp32 restored for
every matrix (the seed: its weight banks, BigramHash and value-embedding projections; the
record: its banks and every CastedLinear); embeddings bf16, control tensors fp32.

The optimizers then update fp32 masters: one step at the warm-down's lr scale 0.05, and
one with zero gradients (decoupled weight decay alone), move every element of every
Muon matrix and projection. With bf16 matrices most of those updates round away."""

from __future__ import annotations

import torch

from pgolf.config import apply_sets
from pgolf.presets import get_preset
from pgolf.train.distributed import DistEnv
from test_trainer import data, micro_sets  # noqa: F401  (fixture)


def bf16_trainer(data_dir):
    from pgolf.train.trainer import Trainer

    cfg = get_preset("tiny")
    apply_sets(cfg, micro_sets(precision="bf16", optimizer_table="seed", ema_decay=0, swa_every=0))
    return Trainer(cfg, data_dir, DistEnv())


def updated_names(tr) -> list[str]:
    """The Muon matrices and the projections (role proj) of the trainer's model."""
    roles = tr.model.param_roles()
    muon = [n for g in tr.muon.groups for n in g.names]
    return sorted(set(muon) | {n for n, r in roles.items() if r == "proj"})


def test_bf16_keeps_fp32_masters_for_every_matrix(data):  # noqa: F811
    tr = bf16_trainer(data[0])
    roles = tr.model.param_roles()
    for name, p in tr.model.named_parameters():
        want = torch.bfloat16 if roles[name] == "embed" else torch.float32
        assert p.dtype == want, (name, p.dtype)
    assert {"blocks.0.attn.q.weight", "bigram.proj.weight", "value_embed.proj.weight"} <= set(updated_names(tr))


def test_warmdown_step_moves_every_matrix_element(data):  # noqa: F811
    tr = bf16_trainer(data[0])
    names = updated_names(tr)
    params = dict(tr.model.named_parameters())
    before = {n: params[n].detach().clone() for n in names}
    tr.step(0.05, 0.95)
    for n in names:
        moved = (params[n] != before[n]).float().mean().item()
        assert moved == 1.0, f"{n}: {moved:.1%} of elements moved"


def test_weight_decay_alone_moves_every_matrix_element(data):  # noqa: F811
    tr = bf16_trainer(data[0])
    names = updated_names(tr)
    params = dict(tr.model.named_parameters())
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n in names:  # zero-initialized outputs too: decay needs something to decay
            params[n].copy_(torch.randn(params[n].shape, generator=g) * 0.05)
    before = {n: params[n].detach().clone() for n in names}
    for p in tr.all_params:
        p.grad = torch.zeros_like(p)
    tr.muon.lr = tr.muon_lr * 0.05
    tr.muon.step()
    for group in tr.adam.param_groups:
        group["lr"] = group["base_lr"] * 0.05
    tr.adam.step()
    assert tr.muon.weight_decay > 0
    for n in names:
        moved = (params[n] != before[n]).float().mean().item()
        assert moved == 1.0, f"{n}: {moved:.1%} of elements moved (weight decay alone)"
