"""Document-isolated attention (record #1855): attention never crosses a document start.

Loaded through :mod:`pgolf.features` when ``model.doc_attention`` is on. Segments come
from the input ids alone, so training, every evaluation path and TTT get them without
any change to their callers: a segment starts at each row start, at every BOS, and
every ``model.doc_segment_len`` tokens inside a longer document (the record's cut at its
``train_seq_len``; 0 never cuts). Each query attends causally inside its own segment:

* on CUDA in bf16/fp16 with FlashAttention-3 importable: ``flash_attn_varlen_func`` on
  the flattened batch, with fixed-size ``cu_seqlens`` (padded by empty segments, so the
  graph has no data-dependent shapes);
* otherwise (CPU, fp32, no FlashAttention-3): SDPA with a block-diagonal causal mask.

    starts = segment_starts(idx, bos_id=1, seg_len=2048)   # [B, T] bool
    y = attend(q, k, v, starts)                            # (B, T, H, D) in and out
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor


def segment_starts(idx: Tensor, bos_id: int, seg_len: int) -> Tensor:
    """[B, T] bool: True where a segment starts (row start, BOS, every ``seg_len`` inside a document)."""
    pos = torch.arange(idx.size(1), device=idx.device)
    bos = idx == bos_id
    starts = bos | (pos == 0)
    if seg_len > 0:
        doc_start = torch.cummax(torch.where(bos, pos, 0), dim=1).values
        starts = starts | ((pos - doc_start) % seg_len == 0)
    return starts


def segment_mask(starts: Tensor) -> Tensor:
    """[B, 1, T, T] bool: query t may attend key s (s <= t, same segment)."""
    seg = torch.cumsum(starts.to(torch.int32), dim=1)
    t = starts.size(1)
    causal = torch.ones(t, t, dtype=torch.bool, device=starts.device).tril()
    return ((seg[:, :, None] == seg[:, None, :]) & causal)[:, None]


def cu_seqlens(starts: Tensor) -> Tensor:
    """int32 [B*T + 1] cumulative segment bounds of the flattened batch, padded with
    empty segments at the end (a fixed shape for every input)."""
    flat = starts.reshape(-1)
    n = flat.numel()
    pos = torch.arange(n, device=flat.device)
    bounds = torch.sort(torch.where(flat, pos, n)).values
    return torch.cat((bounds, bounds.new_full((1,), n))).to(torch.int32)


@functools.lru_cache(maxsize=None)
def varlen_func():
    """FlashAttention-3's ``flash_attn_varlen_func`` if importable with CUDA, else None."""
    if not torch.cuda.is_available():
        return None
    try:
        from flash_attn_interface import flash_attn_varlen_func  # type: ignore
    except Exception:  # not installed / built for another GPU
        return None
    return flash_attn_varlen_func


def _varlen(q: Tensor, k: Tensor, v: Tensor, starts: Tensor, fn) -> Tensor:
    b, t, h, d = q.shape
    cu = cu_seqlens(starts)
    out = fn(q.reshape(b * t, h, d), k.reshape(b * t, *k.shape[2:]), v.reshape(b * t, *v.shape[2:]),
             cu, cu, t, t, causal=True)
    out = out[0] if isinstance(out, tuple) else out
    return out.reshape(b, t, h, d)


def attend(q: Tensor, k: Tensor, v: Tensor, starts: Tensor, fa3=None, native_gqa: bool = True) -> Tensor:
    """Causal GQA attention inside segments, (B, T, H, D) in and out (module docstring);
    ``fa3``: the attention's FlashAttention-3 (None: not used, so neither is its varlen form)."""
    fn = varlen_func() if fa3 is not None else None
    if fn is not None and q.is_cuda and q.dtype in (torch.bfloat16, torch.float16):
        return _varlen(q, k, v, starts, fn)
    mask = segment_mask(starts)
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if native_gqa:
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    else:
        rep = q.size(1) // k.size(1)
        y = F.scaled_dot_product_attention(q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1), attn_mask=mask)
    return y.transpose(1, 2)
