"""The GPT of DESIGN.md §4 (preset ``seed``: 13 layers, d=576, 44,258,604 parameters).

Token embedding (+ BigramHash) -> RMS norm -> SmearGate -> U-Net of blocks (residual mix
with the input ``x0``, layer-norm scale 1/sqrt(layer+1), GQA attention with q/k norm,
partial RoPE, q gain, XSA in the last blocks, value embeddings in chosen blocks,
LeakyReLU(0.5)^2 MLP) -> RMS norm -> tied head -> logit softcap. Every feature is
switched by :class:`pgolf.config.ModelConfig`, including the record stack's (#1855):
depth recurrence (``model.looping`` switches the loops on), U-Net skip
gates, BOS isolation (``doc_isolation``) and, loaded through :mod:`pgolf.features` only
when selected, two parallel residual lanes, the sparse head-output attention gate and
the window SmearGate (:mod:`pgolf.model.record`; the window SmearGate runs on the raw
embedding, before the norm, as the record's) and document-isolated attention
(:mod:`pgolf.model.docattn`, segments derived from the input ids' BOS positions).

    from pgolf.presets import get_preset
    model = GPT(get_preset("tiny").model)
    loss = model(idx, targets)          # mean cross-entropy, fp32 scalar
    logits = model.forward_logits(idx)  # [B, T, V] fp32, after the softcap
    roles = model.param_roles()         # name -> "embed"|"attn"|"mlp_up"|"mlp_down"|"proj"|"control"

The forward pass has no data-dependent Python control flow, so it compiles with
``torch.compile(fullgraph=True)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgolf import features
from pgolf.data.tokenizer import BOS_ID
from pgolf.model.attention import CausalSelfAttention
from pgolf.model.layers import MLP, BigramHash, Embedding, Linear, SmearGate, ValueEmbed, rms_norm

ROLES = ("embed", "attn", "mlp_up", "mlp_down", "proj", "control")


class Block(nn.Module):
    """x_in = m0*x + m1*x0; x += a*attn(norm(x_in)*s); x += m*mlp(norm(x)*s)."""

    def __init__(self, cfg, layer: int):
        super().__init__()
        d = cfg.model_dim
        self.attn = CausalSelfAttention(cfg, use_xsa=layer >= cfg.num_layers - cfg.xsa_last_n)
        self.mlp = MLP(d, round(cfg.mlp_mult * d), cfg.mlp_activation, cfg.leaky_slope)
        self.attn_scale = nn.Parameter(torch.ones(d))
        self.mlp_scale = nn.Parameter(torch.ones(d))
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(d), torch.zeros(d)))) if cfg.resid_mix else None
        self.uses_value_embed = bool(cfg.value_embed_dim) and layer in tuple(cfg.value_embed_layers)
        self.ve_scale = nn.Parameter(torch.tensor(1.0)) if self.uses_value_embed else None
        self.ln_factor = 1.0 / math.sqrt(layer + 1) if cfg.ln_scale else 1.0

    def forward(self, x: Tensor, x0: Tensor, value_embed: Tensor | None = None, rope=None, doc=None) -> Tensor:
        x = self.mix_input(x, x0)
        x = x + self.attn_branch(x, value_embed, rope, doc)
        return x + self.mlp_branch(x)

    def mix_input(self, x: Tensor, x0: Tensor) -> Tensor:
        if self.resid_mix is None:
            return x
        mix = self.resid_mix.to(x.dtype)
        return mix[0] * x + mix[1] * x0

    def attn_branch(self, x: Tensor, value_embed: Tensor | None, rope, doc=None) -> Tensor:
        ve = value_embed * self.ve_scale.to(value_embed.dtype) if self.ve_scale is not None else None
        return self.attn_scale.to(x.dtype) * self.attn(rms_norm(x) * self.ln_factor, ve, rope, doc)

    def mlp_branch(self, x: Tensor) -> Tensor:
        return self.mlp_scale.to(x.dtype) * self.mlp(rms_norm(x) * self.ln_factor)


class GPT(nn.Module):
    """Decoder-only transformer of DESIGN.md §4; see the module docstring."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        d, L = cfg.model_dim, cfg.num_layers
        self.tok_emb = Embedding(cfg.vocab_size, d, role="embed")
        self.bigram = BigramHash(cfg.bigram_buckets, cfg.bigram_dim, d, cfg.bigram_scale_init) if cfg.bigram_buckets else None
        self.smear_raw = cfg.smear_gate and cfg.smear_mode == "window"  # the record's: on the raw embedding
        self.smear_post = cfg.smear_gate and not self.smear_raw  # the seed's: after the norm
        self.smear = SmearGate(d) if self.smear_post else None
        if self.smear_raw:
            self.smear = features.load("model.smear_mode", "window").WindowSmearGate(cfg.gate_window)
        kv_dim = cfg.num_kv_heads * (d // cfg.num_heads)
        use_ve = bool(cfg.value_embed_dim) and any(0 <= i < L for i in cfg.value_embed_layers)
        self.value_embed = ValueEmbed(cfg.vocab_size, cfg.value_embed_dim, kv_dim) if use_ve else None
        self.plain_order = list(range(L))
        self.looped_order = self.plain_order  # depth recurrence: pgolf.model.record.layer_order
        if cfg.num_loops > 0:
            self.looped_order = features.load("model.num_loops", True).layer_order(L, cfg.num_loops, cfg.loop_start,
                                                                                 cfg.loop_end)
        self.looping = cfg.num_loops > 0  # the trainer keeps it off until enable_looping_at; eval runs looped
        n_virtual = len(self.looped_order)  # skips are sized for the longest (looped) layout
        n_skip = min(n_virtual // 2, n_virtual - n_virtual // 2) if cfg.unet_skips else 0
        self.skip_weights = nn.Parameter(torch.ones(n_skip, d)) if n_skip else None
        self.skip_gates = nn.Parameter(torch.zeros(n_skip, d)) if n_skip and cfg.skip_gates else None
        self.parallel_start = cfg.parallel_start_layer
        if self.parallel_start:  # lane_post, lane_resid and parallel_step (pgolf.model.record)
            features.load("model.parallel_start_layer", True).add_lanes(self, L)
        self.doc_starts = features.load("model.doc_attention", True).segment_starts if cfg.doc_attention else None
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(L))
        self.lm_head = None if cfg.tie_embeddings else Linear(d, cfg.vocab_size, role="embed")
        self.softcap = float(cfg.logit_softcap)
        self.reset_parameters()

    # ------------------------------------------------------------------ init
    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The seed's init: orthogonal Q/K/V/MLP-up (and the embedding projections), zero
        attention-out/MLP-down/untied head, token embedding N(0, std), zero bigram table."""
        cfg = self.cfg
        nn.init.normal_(self.tok_emb.weight, std=cfg.tied_embed_init_std)
        ortho = nn.init.orthogonal_ if cfg.ortho_init else (lambda w: nn.init.normal_(w, std=w.size(1) ** -0.5))
        for block in self.blocks:
            for lin in (block.attn.q, block.attn.k, block.attn.v, block.mlp.up):
                ortho(lin.weight)
            for lin in (block.attn.out, block.mlp.down):
                nn.init.zeros_(lin.weight) if cfg.ortho_init else ortho(lin.weight)
        if self.bigram is not None:
            # Table zero so the feature starts as a no-op; the projection orthogonal as the
            # seed's _init_weights leaves it (zeroing both would give neither a gradient).
            nn.init.zeros_(self.bigram.table.weight)
            ortho(self.bigram.proj.weight)
        if self.value_embed is not None:
            nn.init.normal_(self.value_embed.table.weight, std=0.01)
            ortho(self.value_embed.proj.weight)
        if self.lm_head is not None:
            nn.init.zeros_(self.lm_head.weight)

    # --------------------------------------------------------------- forward
    def hidden(self, idx: Tensor) -> Tensor:
        """Final normed hidden states [B, T, d]."""
        x = self.tok_emb(idx)
        bos = idx == BOS_ID if self.cfg.doc_isolation else None  # nothing mixes across a document start
        if self.bigram is not None:
            x = x + self.bigram(idx, bos)
        if self.smear_raw:
            x = self.smear(x, bos)
        x = rms_norm(x)
        if self.smear_post:
            x = self.smear(x, bos)
        x0 = x
        # [B, T] segment starts for document-isolated attention (pgolf.model.docattn), or None
        doc = self.doc_starts(idx, BOS_ID, self.cfg.doc_segment_len) if self.doc_starts else None
        ve = self.value_embed(idx) if self.value_embed is not None else None
        rope = self.blocks[0].attn.rotary.cos_sin(idx.size(1), idx.device, torch.float32)  # same in every block
        order = self.looped_order if self.looping else self.plain_order  # a constant of each compiled graph
        n_enc = len(order) // 2
        n_skip = min(n_enc, len(order) - n_enc, self.skip_weights.size(0)) if self.skip_weights is not None else 0
        skips: list[Tensor] = []
        lanes: tuple[Tensor, Tensor] | None = None
        for v, i in enumerate(order):
            block = self.blocks[i]
            if lanes is None and self.parallel_start and i >= self.parallel_start:
                lanes = (x, x)  # from here on two lanes (they stay split through any later layer)
            if 0 <= v - n_enc < n_skip:
                skip = self.skip_weights[v - n_enc].to(x.dtype) * skips.pop()
                if lanes is None:
                    x = self._add_skip(x, skip, v - n_enc)
                else:  # the record's: into lane 0 only
                    lanes = (self._add_skip(lanes[0], skip, v - n_enc), lanes[1])
            block_ve = ve if block.uses_value_embed else None
            if lanes is None:
                x = block(x, x0, block_ve, rope, doc)
            else:
                lanes = self.parallel_step(block, lanes, x0, block_ve, rope, doc, self.lane_post[i], self.lane_resid[i])
                x = 0.5 * (lanes[0] + lanes[1])  # the final lane: their mean
            if v < n_enc and n_skip:
                skips.append(x)
        return rms_norm(x)

    def _add_skip(self, x: Tensor, skip: Tensor, j: int) -> Tensor:
        """U-Net skip into a stream: ``x + skip``, or with skip gates ``lerp(skip, x, sigmoid(g_j))``."""
        if self.skip_gates is None:
            return x + skip
        return torch.lerp(skip, x, torch.sigmoid(self.skip_gates[j].to(x.dtype)))

    def forward_logits(self, idx: Tensor) -> Tensor:
        """Logits [B, T, V] in fp32, after the softcap c*tanh(z/c)."""
        x = self.hidden(idx)
        head = self.lm_head.effective_weight() if self.lm_head is not None else self.tok_emb.effective_weight()
        logits = F.linear(x, head.to(x.dtype)).float()
        if self.softcap > 0:
            logits = self.softcap * torch.tanh(logits / self.softcap)
        return logits

    def forward(self, idx: Tensor, targets: Tensor) -> Tensor:
        """Mean cross-entropy (nats/token, fp32 scalar) of ``targets`` given ``idx``."""
        logits = self.forward_logits(idx)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))

    # ----------------------------------------------------------------- roles
    def param_roles(self) -> dict[str, str]:
        """Every parameter name -> its role (what optimizer group / bit width it gets)."""
        roles: dict[str, str] = {}
        owners = {f"{name}.weight": m.role for name, m in self.named_modules() if isinstance(m, (Linear, Embedding))}
        for name, p in self.named_parameters():
            roles[name] = owners.get(name, "control")
        return roles


def count_params(model: nn.Module) -> int:
    """Number of distinct parameter elements."""
    return sum(p.numel() for p in model.parameters())
