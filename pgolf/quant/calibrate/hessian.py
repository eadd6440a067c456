"""Calibration: input second moments ``H = X^T X`` of every linear layer, from training batches.

GPTQ-style schemes (``record``, ``turbo-rd``) need, for each quantized matrix, the
Hessian of its layer's output error, ``H = sum_t x_t x_t^T`` over calibration tokens of
the layer input ``x``. :func:`collect_hessians` runs the float model on calibration
batches with forward hooks on every :class:`pgolf.model.layers.Linear` and adds the
final hidden states for the tied embedding (the output head's input). Lookup tables
(embeddings used only as lookups) get no Hessian: their rows are independent.
:func:`calibration_batches` reads the batches from the run's *training* shards, so under
the challenge's rules the time spent counts inside the training budget; pgolf measures
and reports it (``calibration_s``) but does not deduct it from training. Example::

    batches = calibration_batches(data_dir, seq_len=256, n_batches=16, batch_tokens=8192)
    hessians, seconds = collect_hessians(model, batches)    # {param name: float64 [d, d]}
    calib = calibrate(cfg, state_dict, data_dir, n_batches=16)  # a Calibration (+ sensitivities)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class Calibration:
    """Hessians by weight name, the calibration tokens behind them and the seconds spent;
    ``sensitivity``: per weight, measured loss increase per unit step^2 of turbo-rd's grid
    (:mod:`pgolf.quant.calibrate.sensitivity`; empty when not probed)."""

    hessians: dict
    tokens: int
    seconds: float
    batches: int
    sensitivity: dict = field(default_factory=dict)


def calibration_batches(data_dir, seq_len: int, n_batches: int, batch_tokens: int, vocab_size=None):
    """``n_batches`` int64 ``[batch_tokens // seq_len, seq_len + 1]`` blocks (inputs + next
    token) from the train split: evenly spaced, deterministic, no shuffling."""
    from pgolf.data.loader import TokenStream
    from pgolf.data.shards import find_shards

    stream = TokenStream(find_shards(data_dir, "train"), vocab_size)
    seqs = max(1, batch_tokens // seq_len)
    need = n_batches * seqs
    blocks = max(1, (stream.total - 1) // seq_len - 1)
    starts = np.linspace(0, blocks - 1, need).astype(np.int64) * seq_len
    rows = [np.asarray(stream.take(int(s), seq_len + 1), dtype=np.int64) for s in starts]
    x = torch.from_numpy(np.stack(rows))
    return [x[i * seqs : (i + 1) * seqs] for i in range(n_batches)]


@torch.no_grad()
def collect_hessians(model, batches, device="cpu") -> tuple[dict[str, torch.Tensor], float]:
    """``({weight name: H float64 [in, in]}, seconds)`` accumulated over ``batches``."""
    from pgolf.model.layers import Linear

    t0 = time.perf_counter()
    model = model.to(device).eval()
    acc: dict[str, torch.Tensor] = {}

    def add(name: str, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).double()
        h = x.T @ x
        acc[name] = h if name not in acc else acc[name] + h

    hooks = [m.register_forward_hook(lambda mod, inp, out, n=f"{name}.weight": add(n, inp[0]))
             for name, m in model.named_modules() if isinstance(m, Linear)]
    head = "tok_emb.weight" if model.lm_head is None else None
    try:
        for idx in batches:
            hidden = model.hidden(idx[:, :-1].to(device))
            if head is not None:
                add(head, hidden)
    finally:
        for hk in hooks:
            hk.remove()
    return {k: v.cpu() for k, v in acc.items()}, time.perf_counter() - t0


def calibrate(cfg, state_dict, data_dir, n_batches: int, device="cpu", probe_seqs: int = 16) -> Calibration:
    """Load the float model and collect its Hessians on ``n_batches`` train batches of the
    run's ``batch_tokens``; probe each matrix's loss sensitivity on ``probe_seqs`` of their
    sequences (shard reading included in the reported seconds)."""
    from pgolf.model.gpt import GPT

    t0 = time.perf_counter()
    batches = calibration_batches(data_dir, cfg.train.seq_len, n_batches, cfg.train.batch_tokens,
                                  cfg.model.vocab_size)
    model = GPT(cfg.model)
    model.load_state_dict(state_dict)
    hessians, _ = collect_hessians(model.float(), batches, device)
    sens = {}
    if probe_seqs:
        from pgolf.quant.calibrate.sensitivity import probe_sensitivity

        sens = probe_sensitivity(model, torch.cat(list(batches))[:probe_seqs], cfg.quant, device)
    tokens = sum(int(b[:, :-1].numel()) for b in batches)
    return Calibration(hessians, tokens, time.perf_counter() - t0, n_batches, sens)
