"""Building blocks of the GPT: quantization-aware Linear/Embedding, RMS norm, RoPE, MLP.

:class:`Linear` and :class:`Embedding` keep their parameter named ``weight`` and carry a
``role`` (``"embed" | "attn" | "mlp_up" | "mlp_down" | "proj"``) used by the optimizer
and the quantizer. Both have a ``qat`` hook: when ``module.qat`` is a callable (set by
:mod:`pgolf.quant.schemes.qat`), the forward pass uses ``module.qat(module.weight)`` (a
fake-quantized weight with a straight-through gradient) instead of the raw weight.
The tied output head reads the same hooked weight through :meth:`Embedding.effective_weight`.

Nothing here does work at import time; the functions are pure tensor code that
``torch.compile(fullgraph=True)`` can trace.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Linear(nn.Module):
    """Bias-free linear layer whose weight is cast to the input dtype (bf16 under autocast)."""

    def __init__(self, in_features: int, out_features: int, role: str):
        super().__init__()
        self.in_features, self.out_features, self.role = in_features, out_features, role
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.qat = None  # callable(weight) -> fake-quantized weight, set by pgolf.quant.schemes.qat
        nn.init.normal_(self.weight, std=1.0 / math.sqrt(in_features))

    def effective_weight(self) -> Tensor:
        return self.weight if self.qat is None else self.qat(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.effective_weight().to(x.dtype))

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, role={self.role}"


class Embedding(nn.Module):
    """Token lookup table with the same ``qat`` hook as :class:`Linear`."""

    def __init__(self, num_embeddings: int, dim: int, role: str = "embed"):
        super().__init__()
        self.num_embeddings, self.dim, self.role = num_embeddings, dim, role
        self.weight = nn.Parameter(torch.empty(num_embeddings, dim))
        self.qat = None
        nn.init.normal_(self.weight, std=0.02)

    def effective_weight(self) -> Tensor:
        return self.weight if self.qat is None else self.qat(self.weight)

    def forward(self, idx: Tensor) -> Tensor:
        return F.embedding(idx, self.effective_weight())

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.dim}, role={self.role}"


def rms_norm(x: Tensor) -> Tensor:
    """Parameter-free RMS norm over the last dimension."""
    return F.rms_norm(x, (x.size(-1),))


class Rotary(nn.Module):
    """Rotary position embedding on the first ``rope_dims`` dims of each head (half-split form).

    With ``train_seq_len`` > 0 a sequence of T > train_seq_len tokens uses the seed's
    rescaled base ``base * (T / train_seq_len) ** (rd / (rd - 2))`` (rd = rotary dims),
    in training and evaluation alike; 0 never rescales.
    """

    def __init__(self, head_dim: int, rope_dims: int, base: float, train_seq_len: int = 0):
        super().__init__()
        self.rope_dims = rope_dims if rope_dims > 0 else head_dim
        self.base, self.train_seq_len = float(base), int(train_seq_len)
        self.register_buffer("inv_freq", self._inv_freq(self.base), persistent=False)

    def _inv_freq(self, base: float, device=None) -> Tensor:
        return 1.0 / (base ** (torch.arange(0, self.rope_dims, 2, dtype=torch.float32, device=device) / self.rope_dims))

    def base_for(self, seq_len: int) -> float:
        """The rotary base used for a sequence of ``seq_len`` tokens."""
        if self.train_seq_len <= 0 or seq_len <= self.train_seq_len:
            return self.base
        rd = self.rope_dims
        return self.base * (seq_len / self.train_seq_len) ** (rd / (rd - 2))

    def cos_sin(self, seq_len: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """cos/sin tables of shape [1, T, 1, rope_dims/2] for (B, T, H, D) tensors."""
        t = torch.arange(seq_len, device=device, dtype=torch.float32)
        base = self.base_for(seq_len)
        inv_freq = self.inv_freq.to(device) if base == self.base else self._inv_freq(base, device)
        freqs = torch.outer(t, inv_freq)
        return freqs.cos()[None, :, None, :].to(dtype), freqs.sin()[None, :, None, :].to(dtype)

    def rotate(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        rd = self.rope_dims
        half = rd // 2
        x1, x2 = x[..., :half], x[..., half:rd]
        rotated = torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)
        if rd == x.size(-1):
            return rotated
        return torch.cat((rotated, x[..., rd:]), dim=-1)


class MLP(nn.Module):
    """d -> hidden -> d with LeakyReLU(slope)^2 (or ReLU^2 / GELU)."""

    def __init__(self, dim: int, hidden: int, activation: str, leaky_slope: float):
        super().__init__()
        self.up = Linear(dim, hidden, role="mlp_up")
        self.down = Linear(hidden, dim, role="mlp_down")
        if activation not in ("leaky_relu2", "relu2", "gelu"):
            raise ValueError(f"unknown mlp_activation {activation!r}")
        self.activation, self.leaky_slope = activation, leaky_slope

    def forward(self, x: Tensor) -> Tensor:
        h = self.up(x)
        if self.activation == "leaky_relu2":
            h = F.leaky_relu(h, self.leaky_slope).square()
        elif self.activation == "relu2":
            h = F.relu(h).square()
        else:
            h = F.gelu(h)
        return self.down(h)


class BigramHash(nn.Module):
    """Hashed (previous, current) token-pair embedding, projected to the model width."""

    def __init__(self, buckets: int, dim: int, model_dim: int, scale_init: float):
        super().__init__()
        self.buckets = buckets
        self.table = Embedding(buckets, dim, role="embed")
        self.proj = Linear(dim, model_dim, role="proj")  # quantized at the attention bits (3) as the seed does
        self.scale = nn.Parameter(torch.tensor(float(scale_init)))

    def hash(self, idx: Tensor) -> Tensor:
        """Bucket of each position: (36313*cur XOR 27191*prev) mod (buckets-1); position 0 -> buckets-1."""
        t = idx.long()
        mod = self.buckets - 1
        pair = torch.bitwise_xor(36313 * t[:, 1:], 27191 * t[:, :-1]) % mod
        first = torch.full_like(t[:, :1], mod)
        return torch.cat((first, pair), dim=1)

    def forward(self, idx: Tensor, bos: Tensor | None = None) -> Tensor:
        """``bos``: optional [B, T] mask of BOS positions, which then hash like position 0."""
        h = self.hash(idx)
        if bos is not None:
            h = torch.where(bos, self.buckets - 1, h)
        return self.proj(self.table(h)) * self.scale


class SmearGate(nn.Module):
    """x_t <- (1 - sigmoid(g)) * x_t + sigmoid(g) * x_{t-1}, per channel (x_{-1} = 0)."""

    def __init__(self, dim: int):
        super().__init__()
        self.gate = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor, bos: Tensor | None = None) -> Tensor:
        """``bos``: optional [B, T] mask of BOS positions, which then take no previous token."""
        g = torch.sigmoid(self.gate).to(x.dtype)
        prev = F.pad(x[:, :-1], (0, 0, 1, 0))
        if bos is not None:
            prev = prev.masked_fill(bos[..., None], 0.0)
        return (1 - g) * x + g * prev


class ValueEmbed(nn.Module):
    """Shared token -> value-width embedding added to v in chosen blocks."""

    def __init__(self, vocab_size: int, dim: int, kv_dim: int, scale_init: float = 0.1):
        super().__init__()
        self.table = Embedding(vocab_size, dim, role="embed")
        self.proj = Linear(dim, kv_dim, role="proj")
        self.scale = nn.Parameter(torch.tensor(float(scale_init)))

    def forward(self, idx: Tensor) -> Tensor:
        return self.proj(self.table(idx)) * self.scale
