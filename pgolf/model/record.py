"""Record #1855's model features: window SmearGate, sparse attention gate, two lanes, loops.

Loaded through :mod:`pgolf.features` only when a config selects them
(``model.smear_mode=window``, ``model.sparse_attn_gate``, ``model.parallel_start_layer``,
``model.num_loops``),
so a seed-preset ``train_gpt.py`` does not carry this code. The forms follow the record's
script (FACTS.md, "the record's forward pass"):

* :class:`WindowSmearGate` runs on the raw token embedding, before the RMS norm:
  ``x_t += lam * sigmoid(w . x_t[:window]) * x_{t-1}``, the previous-token term dropped
  where the current token is BOS (the record's BOS fix);
* :func:`add_sparse_gate` / :func:`sparse_gate` scale each head's output by ``sigmoid(scale * w_h . x[:window])``;
* :func:`add_lanes` / :func:`parallel_step`: one block in the two-lane region: attention reads
  ``resid_mix[0] * lane0 + resid_mix[1] * x0``, the MLP reads ``lane1``, and
  ``lane_j' = r_j * lane_j + P[attn, j] * A + P[mlp, j] * M`` (``P``: [source, lane]);
* :func:`layer_order` is the execution order of the blocks with depth recurrence.

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


def add_sparse_gate(attn: nn.Module, cfg) -> None:
    """Give an attention module the gate parameter ``gate`` [H, window] (init 0: every head
    at 1/2, the record's init std 0), its ``gate_scale`` and :func:`sparse_gate`."""
    attn.gate = nn.Parameter(torch.zeros(cfg.num_heads, cfg.gate_window))
    attn.gate_scale, attn.sparse_gate = float(cfg.sparse_attn_gate_scale), sparse_gate


def sparse_gate(y: Tensor, x: Tensor, gate: Tensor, scale: float) -> Tensor:
    """Head outputs ``y`` [B, T, H, D] times ``sigmoid(scale * gate_h . x[..., :window])``."""
    w = gate.to(x.dtype)
    return y * torch.sigmoid(scale * F.linear(x[..., : w.size(1)], w)).to(y.dtype)[..., None]


def add_lanes(model, num_layers: int) -> None:
    """Give ``model`` the lane mixes (``lane_post`` [layer, source, lane] init 1, ``lane_resid``
    [layer, lane] init 1.1, the record's) and :func:`parallel_step`."""
    model.lane_post = nn.Parameter(torch.ones(num_layers, 2, 2))
    model.lane_resid = nn.Parameter(torch.full((num_layers, 2), 1.1))
    model.parallel_step = parallel_step


def parallel_step(block, lanes: tuple[Tensor, Tensor], x0: Tensor, value_embed, rope, doc, post: Tensor,
                  resid: Tensor) -> tuple[Tensor, Tensor]:
    """One block on two residual lanes (module docstring); ``post`` [source, lane], ``resid`` [lane]."""
    lane0, lane1 = lanes
    att = block.attn_branch(block.mix_input(lane0, x0), value_embed, rope, doc)
    mlp = block.mlp_branch(lane1)
    post, resid = post.to(lane0.dtype), resid.to(lane0.dtype)
    return (resid[0] * lane0 + post[0, 0] * att + post[1, 0] * mlp,
            resid[1] * lane1 + post[0, 1] * att + post[1, 1] * mlp)


def layer_order(num_layers: int, num_loops: int, loop_start: int, loop_end: int) -> list[int]:
    """Blocks in execution order with depth recurrence: layers ``loop_start..loop_end``
    run ``1 + num_loops`` times (e.g. 11 layers, loops 2 over 3..5:
    0,1,2,3,4,5,3,4,5,3,4,5,6,...,10); the first half of this list is the U-Net encoder."""
    if num_loops <= 0:
        return list(range(num_layers))
    span = list(range(loop_start, loop_end + 1))
    return list(range(loop_start)) + span * (1 + num_loops) + list(range(loop_end + 1, num_layers))
