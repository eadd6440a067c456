"""Exact validation loss and bits per byte of a neural model: standard and sliding windows.

The scored stream is :func:`val_stream` (the validation tokens truncated to
``1 + k*seq_len``); its targets are ``stream[1:]``. *Standard* evaluation runs the ``k``
non-overlapping windows. *Sliding* evaluation runs windows of ``seq_len`` tokens every
``stride`` tokens (plus one final window flush with the end) and scores each target
exactly once, in the earliest window that contains it, i.e. with the longest context
the window grid allows (at least ``seq_len - stride + 1`` tokens after the first
window). ``stride == seq_len`` reproduces the standard evaluation exactly.

Sums are float64; ``bpb = loss_sum / ln 2 / bytes`` with the byte accounting of
:class:`pgolf.data.tokenizer.ByteTables`, or the per-token byte files of a CaseOps
dataset when given (``token_bytes``). Under ``torch.distributed`` whole batches of
windows are dealt round-robin to the ranks (so every batch is computed exactly as in
one process), the sums are all-reduced, and per-token arrays are assembled on every
rank. Example::

    res = evaluate(model, val_tokens, tables, seq_len=2048, stride=64, per_token=True)
    print(res.loss, res.bpb, res.per_token["logp"][:5])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pgolf.collectives import all_reduce, rank_world
from pgolf.errors import PgolfError


@dataclass
class EvalResult:
    """Loss in nats per target token, bits per byte, and the counts they came from."""

    loss: float
    bpb: float
    tokens: int
    bytes: int
    per_token: dict[str, np.ndarray] | None = None  # "logp" f64, "entropy" f32, "bytes" i32; aligned with stream[1:]
    seq_len: int = 0
    stride: int = 0  # == seq_len for the standard evaluation


def val_stream(tokens: np.ndarray, seq_len: int) -> np.ndarray:
    """The first ``1 + k*seq_len`` tokens (``k`` whole windows of targets)."""
    n = len(tokens)
    if seq_len < 1:
        raise PgolfError(f"evaluation seq_len must be >= 1, got {seq_len}")
    k = (n - 1) // seq_len
    if k < 1:
        raise PgolfError(f"validation stream has {n} tokens; evaluation needs at least seq_len+1 = {seq_len + 1}")
    return np.asarray(tokens[: 1 + k * seq_len])


def standard_windows(n_targets: int, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping windows: (start of each window, first scored offset = 0)."""
    starts = np.arange(n_targets // seq_len, dtype=np.int64) * seq_len
    return starts, np.zeros_like(starts)


def sliding_windows(n_targets: int, seq_len: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows every ``stride`` tokens plus one flush with the end.

    Returns ``(starts, score_from)``: window ``w`` reads inputs ``stream[s:s+seq_len]``
    (``s = starts[w]``) and scores targets ``s+score_from[w] .. s+seq_len-1`` (indices
    into ``stream[1:]``); together the windows score every target exactly once.
    """
    if not 1 <= stride <= seq_len:
        raise PgolfError(f"stride must be between 1 and seq_len={seq_len}, got {stride}")
    if n_targets < seq_len:
        raise PgolfError(f"{n_targets} targets is fewer than one window of {seq_len}")
    last = n_targets - seq_len
    starts = np.arange(0, last + 1, stride, dtype=np.int64)
    if starts[-1] != last:
        starts = np.append(starts, last)
    prev_end = np.concatenate(([0], starts[:-1] + seq_len))
    return starts, prev_end - starts


def _score_windows(model, stream, starts, score_from, seq_len, batch_seqs, device, per_token, autocast, show, desc):
    """Score the given windows on this rank's share of batches; returns local sums and arrays."""
    import torch
    import torch.nn.functional as F

    from pgolf.data.progress import progress

    rank, world = rank_world()
    n_targets = len(stream) - 1
    stream_t = torch.from_numpy(stream.astype(np.int64))
    offs = torch.arange(seq_len)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.int64, device=device)
    logp_out = torch.zeros(n_targets, dtype=torch.float64) if per_token else None
    ent_out = torch.zeros(n_targets, dtype=torch.float32) if per_token else None
    n_batches = -(-len(starts) // batch_seqs)
    mine = range(rank, n_batches, world)
    use_amp = autocast if autocast is not None else device.type == "cuda"
    with progress(total=len(mine), desc=desc, unit="batch", enabled=show and rank == 0) as bar:
        for b in mine:
            s = torch.from_numpy(starts[b * batch_seqs : (b + 1) * batch_seqs])
            sf = torch.from_numpy(score_from[b * batch_seqs : (b + 1) * batch_seqs])
            pos = s[:, None] + offs  # input positions; also target indices into stream[1:]
            idx, tgt = stream_t[pos].to(device), stream_t[pos + 1].to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = model.forward_logits(idx)
            lo = int(sf.min())  # only the scored suffix needs the softmax
            logp_all = F.log_softmax(logits[:, lo:].float(), dim=-1)
            lp = logp_all.gather(-1, tgt[:, lo:, None]).squeeze(-1)
            mask_cpu = offs[lo:][None, :] >= sf[:, None]
            mask = mask_cpu.to(device)
            loss_sum -= torch.where(mask, lp.double(), 0.0).sum()  # no host sync on GPU
            count += mask.sum()
            if per_token:
                ent = -(logp_all.exp() * logp_all).sum(-1)
                where = pos[:, lo:][mask_cpu]
                logp_out[where] = lp[mask].double().cpu()
                ent_out[where] = ent[mask].float().cpu()
            bar.update(1)
    return loss_sum, count, logp_out, ent_out


def evaluate(model, tokens, tables, seq_len: int, stride: int | None = None, batch_seqs: int = 32, device=None,
             per_token: bool = False, progress: bool = True, autocast: bool | None = None,
             token_bytes: np.ndarray | None = None) -> EvalResult:
    """Evaluate ``model`` (anything with ``forward_logits``) on ``val_stream(tokens, seq_len)``.

    ``stride=None`` is the standard evaluation; otherwise sliding windows. ``autocast``
    None means bf16 on CUDA and full precision elsewhere. ``token_bytes`` (aligned with
    ``tokens``: each token's original UTF-8 bytes, from the per-token byte files of
    :mod:`pgolf.data.sidecar`) replaces the tokenizer's byte tables when given. See the
    module docstring.
    """
    import torch

    stream = val_stream(np.asarray(tokens), seq_len)
    n_targets = len(stream) - 1
    if int(stream.max()) >= tables.vocab_size:
        raise PgolfError(f"token id {int(stream.max())} is outside the tokenizer's vocabulary of {tables.vocab_size}")
    if stride is None:
        starts, score_from = standard_windows(n_targets, seq_len)
    else:
        starts, score_from = sliding_windows(n_targets, seq_len, stride)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            desc = "eval standard" if stride is None else f"eval sliding/{stride}"
            loss_sum, count, logp, ent = _score_windows(model, stream, starts, score_from, seq_len, max(1, batch_seqs),
                                                        device, per_token, autocast, progress, desc)
            if rank_world()[1] > 1:
                loss_sum, count = all_reduce(loss_sum), all_reduce(count)
                if per_token:
                    logp, ent = all_reduce(logp), all_reduce(ent)
    finally:
        model.train(was_training)
    if int(count) != n_targets:
        raise RuntimeError(f"internal error: scored {int(count)} targets, expected {n_targets}")
    if token_bytes is None:
        target_bytes = tables.target_bytes(stream[1:], stream[:-1])
    elif len(token_bytes) < len(stream):
        raise PgolfError(f"{len(token_bytes)} per-token byte counts for a stream of {len(stream)} tokens")
    else:
        target_bytes = np.asarray(token_bytes[1:len(stream)], dtype=np.int64)
    n_bytes = int(target_bytes.sum())
    if n_bytes <= 0:
        raise PgolfError("validation targets contain 0 bytes; bits per byte undefined")
    total = float(loss_sum)
    arrays = None
    if per_token:
        arrays = {"logp": logp.numpy(), "entropy": ent.numpy(), "bytes": target_bytes.astype(np.int32)}
    return EvalResult(loss=total / n_targets, bpb=total / math.log(2) / n_bytes, tokens=n_targets, bytes=n_bytes,
                      per_token=arrays, seq_len=seq_len, stride=seq_len if stride is None else stride)
