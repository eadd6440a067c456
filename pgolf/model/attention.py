"""Causal grouped-query attention: one entry point over FlashAttention-3 and SDPA.

:func:`causal_attention` takes q ``[B, T, H, D]`` and k, v ``[B, T, KV, D]`` (KV divides
H) and returns ``[B, T, H, D]``. It uses FlashAttention-3
(``flash_attn_interface.flash_attn_func``) when ``use_flash`` is set, the package is
importable and runs at the model's head dimension (:func:`flash_attn_for` probes it
once), and the tensors are on CUDA and in bf16/fp16; otherwise
``F.scaled_dot_product_attention(is_causal=True)`` with native GQA
(``enable_gqa=True``, torch >= 2.5), or with KV heads repeated on older torch.
:class:`CausalSelfAttention` is the block's attention module (DESIGN.md §4: q/k RMS
norm, partial RoPE, per-head q gain, optional XSA, value embedding; the record's sparse
head-output gate and document-isolated attention come from :mod:`pgolf.model.record` and
:mod:`pgolf.model.docattn` through :mod:`pgolf.features` when switched on).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgolf import features
from pgolf.model.layers import Linear, Rotary, rms_norm


@functools.lru_cache(maxsize=None)
def sdpa_supports_gqa() -> bool:
    """True when this torch's SDPA accepts ``enable_gqa`` (torch >= 2.5)."""
    major, minor = (int(p) for p in torch.__version__.split(".")[:2])
    return (major, minor) >= (2, 5)


@functools.lru_cache(maxsize=None)
def flash_attn_func():
    """FlashAttention-3's ``flash_attn_func`` if importable and CUDA is present, else None."""
    if not torch.cuda.is_available():
        return None
    try:
        from flash_attn_interface import flash_attn_func as fa3  # type: ignore
    except Exception:  # not installed / built for another GPU
        return None
    return fa3


@functools.lru_cache(maxsize=None)
def flash_attn_for(head_dim: int):
    """FlashAttention-3 if importable and it runs at ``head_dim`` (one tiny probe call), else None."""
    fa3 = flash_attn_func()
    if fa3 is None:
        return None
    try:
        q = torch.zeros(1, 8, 2, head_dim, device="cuda", dtype=torch.bfloat16)
        fa3(q, q[:, :, :1], q[:, :, :1], causal=True)
    except Exception:  # this build lacks kernels for head_dim: SDPA instead
        return None
    return fa3


def sdpa_attention(q: Tensor, k: Tensor, v: Tensor, native_gqa: bool | None = None) -> Tensor:
    """Causal SDPA on (B, T, H, D) tensors; GQA natively or by repeating KV heads."""
    if native_gqa is None:
        native_gqa = sdpa_supports_gqa()
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if native_gqa:
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    else:
        rep = q.size(1) // k.size(1)
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return y.transpose(1, 2)


def causal_attention(q: Tensor, k: Tensor, v: Tensor, fa3=None, native_gqa: bool | None = None) -> Tensor:
    """Causal GQA attention, (B, T, H, D) in and out.

    ``fa3`` is FlashAttention-3's function (see :func:`flash_attn_func`) or None; it is used
    only for CUDA bf16/fp16 inputs, else SDPA.
    """
    if fa3 is not None and q.is_cuda and q.dtype in (torch.bfloat16, torch.float16):
        out = fa3(q, k, v, causal=True)
        return out[0] if isinstance(out, tuple) else out
    return sdpa_attention(q, k, v, native_gqa)


def xsa(y: Tensor, v: Tensor) -> Tensor:
    """Remove from each head's output its component along its KV group's unit value vector."""
    b, t, h, d = y.shape
    kv = v.size(2)
    yg = y.reshape(b, t, kv, h // kv, d)
    vn = F.normalize(v, dim=-1).unsqueeze(3)
    return (yg - (yg * vn).sum(-1, keepdim=True) * vn).reshape(b, t, h, d)


class CausalSelfAttention(nn.Module):
    """GQA self-attention with q/k RMS norm, partial RoPE, q gain, XSA and value embeddings."""

    def __init__(self, cfg, use_xsa: bool):
        super().__init__()
        d, h, kv = cfg.model_dim, cfg.num_heads, cfg.num_kv_heads
        self.num_heads, self.num_kv_heads, self.head_dim = h, kv, d // h
        self.q = Linear(d, d, role="attn")
        self.k = Linear(d, kv * self.head_dim, role="attn")
        self.v = Linear(d, kv * self.head_dim, role="attn")
        self.out = Linear(d, d, role="attn")
        self.q_gain = nn.Parameter(torch.full((h,), float(cfg.q_gain_init))) if cfg.q_gain_init else None
        self.rotary = Rotary(self.head_dim, cfg.rope_dims, cfg.rope_base, cfg.rope_train_seq_len)
        self.qk_norm, self.use_xsa = cfg.qk_norm, use_xsa
        self.sparse_gate = None  # the record's head-output gate: parameter ``gate`` [H, window] (pgolf.model.record)
        if cfg.sparse_attn_gate:
            features.load("model.sparse_attn_gate", True).add_sparse_gate(self, cfg)
        self.doc_attend = features.load("model.doc_attention", True).attend if cfg.doc_attention else None
        # resolved once here so the traced forward has no capability checks
        self.fa3 = flash_attn_for(self.head_dim) if cfg.use_flash_attn else None
        self.native_gqa = sdpa_supports_gqa()

    def forward(self, x: Tensor, value_embed: Tensor | None = None, rope: tuple[Tensor, Tensor] | None = None,
                doc: Tensor | None = None) -> Tensor:
        """``rope``: precomputed (cos, sin) from ``self.rotary.cos_sin`` (shared by all blocks);
        ``doc``: [B, T] segment starts (document-isolated attention), or None."""
        b, t, d = x.shape
        q = self.q(x).reshape(b, t, self.num_heads, self.head_dim)
        k = self.k(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        v = self.v(x)
        if value_embed is not None:
            v = v + value_embed.to(v.dtype)
        v = v.reshape(b, t, self.num_kv_heads, self.head_dim)
        if self.qk_norm:
            q, k = rms_norm(q), rms_norm(k)
        cos, sin = rope if rope is not None else self.rotary.cos_sin(t, x.device, q.dtype)
        cos, sin = cos.to(q.dtype), sin.to(q.dtype)
        q, k = self.rotary.rotate(q, cos, sin), self.rotary.rotate(k, cos, sin)
        if self.q_gain is not None:
            q = q * self.q_gain.to(q.dtype)[None, None, :, None]
        q, k = q.to(v.dtype), k.to(v.dtype)  # norms may run in fp32 under autocast; attention wants one dtype
        if doc is not None:  # document-isolated (pgolf.model.docattn)
            y = self.doc_attend(q, k, v, doc, self.fa3, self.native_gqa)
        else:
            y = causal_attention(q, k, v, self.fa3, self.native_gqa)
        if self.use_xsa:
            y = xsa(y, v)
        if self.sparse_gate is not None:
            y = self.sparse_gate(y, x, self.gate, self.gate_scale)
        return self.out(y.reshape(b, t, d))
