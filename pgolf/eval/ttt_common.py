"""Pieces every score-first TTT driver shares: which Linears LoRA adapts, the training
sequences of a scored range that never cross a document start, and the global SGD on
the base weights (``global`` mode, and between the phases of ``phased``), data-parallel
over the ranks of a process group (fixed gradient units summed in float64 through
:mod:`pgolf.collectives`, so 1 and N processes take the same step). Used by
:mod:`pgolf.eval.ttt` (the stream-harness methods) and :mod:`pgolf.eval.ttt_docs` (the
document-batched LoRA).

    seqs = doc_sequences(tokens, lo, hi, seq_len, bos_id)
    GlobalSGD(model, cfg.ttt, seq_len, bos_id, autocast=False).train(tokens, lo, hi)
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pgolf.collectives import all_reduce, rank_world

def lora_modules(model, targets) -> dict:
    """Parameter name (``model.`` + weight name) -> Linear for each adapted block matrix."""
    picks = {"q": ("attn.q",), "k": ("attn.k",), "v": ("attn.v",), "o": ("attn.out",), "mlp": ("mlp.up", "mlp.down")}
    out = {}
    for i, block in enumerate(model.blocks):
        for t in targets:
            for path in picks.get(t, ()):
                mod = block.get_submodule(path)
                out[f"model.blocks.{i}.{path}.weight"] = mod
    return out


def doc_sequences(tokens: np.ndarray, lo: int, hi: int, seq_len: int, bos_id: int) -> list[np.ndarray]:
    """Training sequences (inputs + 1 target) whose targets are ``tokens[lo:hi]``, never crossing a BOS.

    The range is cut before every BOS (a document starts at its BOS), then into pieces of
    at most ``seq_len + 1`` tokens overlapping by one (each target trained on once).
    """
    lo = max(lo, 1)
    cuts = [lo - 1] + [int(q) for q in np.flatnonzero(tokens[lo:hi] == bos_id) + lo] + [hi]
    seqs = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        for s in range(a, b - 1, seq_len):
            piece = tokens[s: min(s + seq_len + 1, b)]
            if len(piece) >= 2:
                seqs.append(piece)
    return seqs


class GlobalSGD:
    """SGD with momentum on every base weight, one step per ``chunk_tokens`` targets."""

    unit_seqs = 8  # sequences per gradient unit; fixed (not the world size): same sum for 1 or N ranks

    def __init__(self, model, cfg, seq_len, bos_id, autocast):
        self.model, self.cfg, self.seq_len, self.bos_id, self.autocast = model, cfg, seq_len, bos_id, autocast
        self.opt = torch.optim.SGD(model.parameters(), lr=cfg.global_lr, momentum=cfg.global_momentum)
        self.trained = 0

    def train(self, tokens: np.ndarray, lo: int, hi: int) -> None:
        """One epoch over the targets ``tokens[lo:hi]`` (all already scored)."""
        step = max(1, int(self.cfg.global_chunk_tokens))
        for a in range(lo, hi, step):
            seqs = doc_sequences(tokens, a, min(a + step, hi), self.seq_len, self.bos_id)
            if seqs:
                self._step(seqs)

    def _step(self, seqs) -> None:
        """One SGD step on the mean loss over ``seqs``.

        The sequences are cut into units of ``unit_seqs`` (a number that does not depend
        on the world size); units are dealt to ranks round-robin, each unit's fp32 gradient is
        added into one float64 sum, and the ranks' sums are all-reduced in float64. So the
        gradient is the same float64 sum of the same fp32 terms for 1 or N processes (rounded to
        fp32 once), and every rank takes the step one process would."""
        rank, world = rank_world()
        total = sum(len(s) - 1 for s in seqs)
        size = max(1, int(self.unit_seqs))
        units = [seqs[i: i + size] for i in range(0, len(seqs), size)]
        params = list(self.model.parameters())
        acc = torch.zeros(sum(p.numel() for p in params), dtype=torch.float64, device=params[0].device)
        self.model.requires_grad_(True)
        for unit in units[rank::world]:
            self.opt.zero_grad(set_to_none=True)
            self._unit_loss(unit, total).backward()
            acc += torch.cat([_grad(p).reshape(-1).double() for p in params])
        if world > 1:
            all_reduce(acc)
        for p, g in zip(params, acc.split([p.numel() for p in params])):
            p.grad = g.view_as(p).to(p.dtype)
        if self.cfg.global_grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, self.cfg.global_grad_clip)
        self.opt.step()
        self.model.requires_grad_(False)
        self.trained += total

    def _unit_loss(self, unit, total: int):
        """This unit's share of the mean loss: its summed cross-entropy over all ``total`` targets."""
        x, y = self._batch(unit)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            logits = self.model.forward_logits(x)
        return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1), ignore_index=-100,
                               reduction="sum") / total

    def _batch(self, seqs):
        width = max(len(s) for s in seqs)
        x = torch.zeros(len(seqs), width - 1, dtype=torch.long)
        y = torch.full((len(seqs), width - 1), -100, dtype=torch.long)
        for i, s in enumerate(seqs):
            t = torch.from_numpy(s.astype(np.int64))
            x[i, : len(s) - 1], y[i, : len(s) - 1] = t[:-1], t[1:]
        dev = next(self.model.parameters()).device
        return x.to(dev), y.to(dev)


def _grad(p):
    return p.grad if p.grad is not None else torch.zeros_like(p)
