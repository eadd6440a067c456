"""Record #1855's model features: the window SmearGate, the sparse attention gate, two lanes.

Loaded through :mod:`pgolf.features` only when a config selects them
(``model.smear_mode=window``, ``model.sparse_attn_gate``, ``model.parallel_start_layer``),
so a seed-preset ``train_gpt.py`` does not carry this code. The forms follow the record's
script (FACTS.md, "the record's forward pass"):

* :class:`WindowSmearGate` runs on the raw token embedding, before the RMS norm:
  ``x_t += lam * sigmoid(w . x_t[:window]) * x_{t-1}``, the previous-token term dropped
  where the current token is BOS (the record's BOS fix);
* :func:`sparse_gate` scales each head's output by ``sigmoid(scale * w_h . x[:window])``;
* :func:`parallel_step` is one block in the two-lane region: attention reads
  ``resid_mix[0] * lane0 + resid_mix[1] * x0``, the MLP reads ``lane1``, and
  ``lane_j' = r_j * lane_j + P[attn, j] * A + P[mlp, j] * M`` (``P``: [source, lane]).

    gate = WindowSmearGate(12); x = rms_norm(gate(tok_emb(idx), idx == BOS))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class WindowSmearGate(nn.Module):
    """``x_t += lam * sigmoid(w . x_t[:window]) * x_{t-1}`` (x_{-1} = 0); ``lam`` and ``w`` init 0."""

    def __init__(self, window: int):
        super().__init__()
        self.window = window
        self.lam = nn.Parameter(torch.zeros(()))
        self.gate = nn.Parameter(torch.zeros(1, window))

    def forward(self, x: Tensor, bos: Tensor | None = None) -> Tensor:
        """``bos``: optional [B, T] mask of BOS positions, which then take no previous token."""
        g = self.lam.to(x.dtype) * torch.sigmoid(F.linear(x[..., : self.window], self.gate.to(x.dtype)))
        prev = F.pad(x[:, :-1], (0, 0, 1, 0))
        if bos is not None:
            prev = prev.masked_fill(bos[..., None], 0.0)
        return x + g * prev


def sparse_gate(y: Tensor, x: Tensor, gate: Tensor, scale: float) -> Tensor:
    """Head outputs ``y`` [B, T, H, D] times ``sigmoid(scale * gate_h . x[..., :window])``."""
    w = gate.to(x.dtype)
    return y * torch.sigmoid(scale * F.linear(x[..., : w.size(1)], w)).to(y.dtype)[..., None]


def parallel_step(block, lanes: tuple[Tensor, Tensor], x0: Tensor, value_embed, rope, doc, post: Tensor,
                  resid: Tensor) -> tuple[Tensor, Tensor]:
    """One block on two residual lanes (module docstring); ``post`` [source, lane], ``resid`` [lane]."""
    lane0, lane1 = lanes
    att = block.attn_branch(block.mix_input(lane0, x0), value_embed, rope, doc)
    mlp = block.mlp_branch(lane1)
    post, resid = post.to(lane0.dtype), resid.to(lane0.dtype)
    return (resid[0] * lane0 + post[0, 0] * att + post[1, 0] * mlp,
            resid[1] * lane1 + post[0, 1] * att + post[1, 1] * mlp)
