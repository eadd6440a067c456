"""Optimizer groups as data: which parameter gets which optimizer, lr and weight decay.

A table is an ordered list of :class:`GroupRule` rows (name, optimizer, the
:class:`pgolf.config.TrainConfig` fields holding its lr and weight decay, and
shell-style patterns on parameter names); every parameter goes to the first row that
matches it. This is independent of the quantization role of a tensor (a different
fact, see :mod:`pgolf.quant.calibrate.allocation`). ``TrainConfig.optimizer_table`` names the
table; a preset adds one by extending :data:`TABLES` (and its name to
:data:`pgolf.config.OPTIMIZER_TABLES`, which validates it without importing this module). Torch-free::

    groups = assign_groups(dict(model.named_parameters()), cfg.train, tied=cfg.model.tie_embeddings)
    for g in groups: print(g.name, g.optimizer, g.lr, g.weight_decay, g.params)
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Iterable

from pgolf.errors import ConfigError

#: Parameters updated by Muon in the seed: the block matrices (q/k/v/out, MLP up/down).
BLOCK_MATRICES = ("blocks.*.attn.q.weight", "blocks.*.attn.k.weight", "blocks.*.attn.v.weight",
                  "blocks.*.attn.out.weight", "blocks.*.mlp.up.weight", "blocks.*.mlp.down.weight")


@dataclass(frozen=True)
class GroupRule:
    """One row: parameters matching ``patterns`` go to ``optimizer`` at ``TrainConfig.<lr_field>``.

    ``wd_field`` names the weight-decay field (None: no weight decay). ``tied`` limits the
    row to tied (True) or untied (False) embeddings; None applies to both.
    """

    name: str
    optimizer: str  # "muon" | "adamw"
    lr_field: str
    wd_field: str | None
    patterns: tuple[str, ...]
    tied: bool | None = None


@dataclass
class Group:
    """A resolved group: the numbers and the parameter names it holds."""

    name: str
    optimizer: str
    lr: float
    weight_decay: float
    params: list[str]

    def to_dict(self) -> dict:
        return {"name": self.name, "optimizer": self.optimizer, "lr": self.lr,
                "weight_decay": self.weight_decay, "params": list(self.params)}


#: The seed's script: Muon on the block matrices; AdamW "token" group at the tied-embedding
#: lr (tied embedding, BigramHash table, value-embedding table); an untied embedding at
#: EMBED_LR and an untied head at HEAD_LR without decay (the challenge's scripts); AdamW
#: "scalar" for everything else (control tensors, skip weights, smear gate, the BigramHash
#: projection and scale, the value-embedding projection and scales).
SEED_TABLE = (
    GroupRule("muon", "muon", "matrix_lr", "muon_wd", BLOCK_MATRICES),
    GroupRule("token", "adamw", "tied_embed_lr", "adam_wd", ("tok_emb.weight",), tied=True),
    GroupRule("token", "adamw", "tied_embed_lr", "adam_wd", ("bigram.table.weight", "value_embed.table.weight")),
    GroupRule("embed", "adamw", "embed_lr", "adam_wd", ("tok_emb.weight",), tied=False),
    GroupRule("head", "adamw", "head_lr", None, ("lm_head.weight",)),
    GroupRule("scalar", "adamw", "scalar_lr", "adam_wd", ("*",)),
)

#: pgolf 0.1's routing, kept for the ``tiny`` preset (runs compare against it): Muon also
#: on the value-embedding projection; the token embedding at the tied lr; the rest scalar.
V01_TABLE = (
    GroupRule("muon", "muon", "matrix_lr", "muon_wd", BLOCK_MATRICES + ("value_embed.proj.weight",)),
    GroupRule("token", "adamw", "tied_embed_lr", "adam_wd", ("tok_emb.weight",)),
    GroupRule("scalar", "adamw", "scalar_lr", "adam_wd", ("*",)),
)

#: Record #1855: Muon on the block matrices (MUON_WD); the token embedding at its lr with
#: its own decay EMBED_WD; everything else (gates, mixes, scales, skip weights) AdamW at
#: SCALAR_LR with ADAM_WD.
RECORD_TABLE = (
    GroupRule("muon", "muon", "matrix_lr", "muon_wd", BLOCK_MATRICES),
    GroupRule("token", "adamw", "tied_embed_lr", "embed_wd", ("tok_emb.weight",), tied=True),
    GroupRule("embed", "adamw", "embed_lr", "embed_wd", ("tok_emb.weight",), tied=False),
    GroupRule("head", "adamw", "head_lr", None, ("lm_head.weight",)),
    GroupRule("scalar", "adamw", "scalar_lr", "adam_wd", ("*",)),
)

TABLES: dict[str, tuple[GroupRule, ...]] = {"seed": SEED_TABLE, "v0.1": V01_TABLE, "record": RECORD_TABLE}


def get_table(name: str) -> tuple[GroupRule, ...]:
    if name not in TABLES:
        raise ConfigError(f"unknown optimizer_table {name!r}; choose one of: {', '.join(TABLES)}")
    return TABLES[name]


def _rule_for(name: str, table, tied: bool) -> GroupRule:
    for rule in table:
        if rule.tied is not None and rule.tied != tied:
            continue
        if any(fnmatchcase(name, pat) for pat in rule.patterns):
            return rule
    raise ConfigError(f"parameter {name} matches no optimizer group (the table needs a catch-all row)")


def assign_groups(names: Iterable[str], tcfg, tied: bool) -> list[Group]:
    """Groups of ``names`` under the table ``tcfg.optimizer_table``, in table order.

    Rows sharing a name merge into one group; groups without parameters are dropped.
    """
    table = get_table(tcfg.optimizer_table)
    groups: dict[str, Group] = {}
    for rule in table:
        if rule.name not in groups:
            wd = float(getattr(tcfg, rule.wd_field)) if rule.wd_field else 0.0
            groups[rule.name] = Group(rule.name, rule.optimizer, float(getattr(tcfg, rule.lr_field)), wd, [])
    for name in names:
        groups[_rule_for(name, table, tied).name].params.append(name)
    return [g for g in groups.values() if g.params]
