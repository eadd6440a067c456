"""Configuration: dataclasses for every stage, and overrides.

A :class:`RunConfig` bundles :class:`ModelConfig`, :class:`TrainConfig`,
:class:`QuantConfig`, :class:`EvalConfig` and :class:`TTTConfig`; :meth:`RunConfig.from_dict`
reads a saved one (e.g. a run's config.json, or a generated script's run_config.json).
Overrides come from ``--set key=value`` (``key`` is a field name, optionally prefixed by
its section, e.g. ``max_wallclock_seconds=300`` or ``train.seed=42``) and from the
challenge's environment variables (``NUM_LAYERS``, ``MODEL_DIM``, ...; see
:data:`ENV_OVERRIDES`). Every value that enters (``--set``, environment, a saved
config, an artifact's header) is checked against its field's range (:data:`RANGES`: a
:class:`pgolf.errors.RangeError`, exit code 2, naming field, value and range; NaN and inf
are never in range) and strings are short names; :func:`validate` checks cross-field
constraints; :func:`config_overrides` is the part of a config that differs from the
defaults (what a generated script stores). The named
presets and their resolution (preset, then environment, then ``--set``) are in
:mod:`pgolf.presets`. Example::

    cfg = RunConfig.from_dict(json.loads(Path("runs/tiny/config.json").read_text()))
    apply_sets(cfg, ["train.seed=42"])
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Mapping

from pgolf.errors import ConfigError, RangeError


@dataclass
class ModelConfig:
    """Architecture of the GPT (DESIGN.md §4). Every feature can be switched off."""

    vocab_size: int = 1024  # tokenizer vocabulary size
    num_layers: int = 13  # transformer blocks
    model_dim: int = 576  # residual width d
    num_heads: int = 8  # query heads
    num_kv_heads: int = 4  # key/value heads (GQA); must divide num_heads
    mlp_mult: float = 3.5  # MLP hidden width = round(mlp_mult * d)
    mlp_activation: str = "leaky_relu2"  # "leaky_relu2" (LeakyReLU(0.5)^2) | "relu2" | "gelu"
    leaky_slope: float = 0.5  # negative slope of the LeakyReLU before squaring
    tie_embeddings: bool = True  # output head shares the token embedding
    logit_softcap: float = 30.0  # logits = c*tanh(z/c); 0 disables
    tied_embed_init_std: float = 0.005  # init std of the token embedding
    ortho_init: bool = True  # orthogonal Q/K/V/MLP-up, zero attn-out and MLP-down
    rope_base: float = 10000.0  # RoPE base frequency
    rope_dims: int = 16  # partial RoPE: rotate the first N dims of each head (0 = all)
    rope_train_seq_len: int = 1024  # T > this: base * (T/this)^(rd/(rd-2)) as the seed does (0 = never rescale)
    qk_norm: bool = True  # RMS-normalize q and k per head
    q_gain_init: float = 1.5  # learned per-head query gain, initial value (0 disables)
    bigram_buckets: int = 2048  # BigramHash table rows (0 disables BigramHash)
    bigram_dim: int = 128  # BigramHash embedding width
    bigram_scale_init: float = 0.05  # learned scale of the BigramHash contribution
    smear_gate: bool = True  # SmearGate on the input embedding
    unet_skips: bool = True  # U-Net skip connections between first and second half
    resid_mix: bool = True  # x_in = m0*x + m1*x0 per block
    ln_scale: bool = True  # scale normed block inputs by 1/sqrt(layer+1)
    xsa_last_n: int = 4  # XSA (remove value-direction component) in the last N blocks
    value_embed_dim: int = 128  # shared value-embedding width (0 disables)
    value_embed_layers: tuple[int, ...] = (11, 12)  # blocks that add the value embedding (the seed's README; its script's default is 9,10)
    use_flash_attn: bool = True  # use FlashAttention-3 when importable on CUDA
    doc_isolation: bool = False  # SmearGate/BigramHash never mix the previous document into a BOS position (seed: off, as the seed)
    # --- switches of the record stack (#1855), all off in the seed preset ---
    smear_mode: str = "channel"  # SmearGate form: "channel" (the seed's per-channel gate) | "window" (the record's lambda*sigmoid(w.x[:gate_window]))
    gate_window: int = 12  # leading residual dims read by the window SmearGate and the sparse attention gate
    sparse_attn_gate: bool = False  # per-head output gate sigmoid(scale * w_h . x[:gate_window]) on attention
    sparse_attn_gate_scale: float = 0.5  # the sparse attention gate's scale
    skip_gates: bool = False  # U-Net skips as lerp(w*skip, x, sigmoid(g)) with a learned per-channel g
    parallel_start_layer: int = 0  # >0: two residual lanes (attention, MLP) from this layer on, learned 2x2 mix, final lane mean
    num_loops: int = 0  # depth recurrence: layers loop_start..loop_end run this many extra times (0 disables)
    loop_start: int = 0  # first layer of the recurrent span
    loop_end: int = 0  # last layer of the recurrent span (inclusive)
    enable_looping_at: float = 0.0  # the loops switch on at this fraction of training (steps or wall clock)
    doc_attention: bool = False  # attention never crosses a document start (BOS), the record's varlen segments
    doc_segment_len: int = 2048  # doc_attention: also cut a segment every N tokens inside a longer document (0 = never)


@dataclass
class TrainConfig:
    """Training recipe (DESIGN.md §5): Muon + AdamW, schedules, EMA/SWA, wall-clock cap."""

    seed: int = 1337  # global RNG seed
    seq_len: int = 2048  # training sequence length
    batch_tokens: int = 786_432  # global tokens per optimizer step (all ranks, all micro-steps)
    micro_batch_seqs: int = 48  # sequences per forward pass per rank (sets accumulation)
    iterations: int = 20_000  # max optimizer steps
    warmup_steps: int = 20  # compile/warm-up steps whose weights and states are then restored
    warmdown_iters: int = 3500  # lr falls linearly to 0 over the last N steps (or their wall time)
    max_wallclock_seconds: float = 600.0  # training time cap (0 = no cap)
    warmdown_frac: float = 0.0  # >0 with a cap: warm down over this fraction of the cap (instead of warmdown_iters steps' time)
    matrix_lr: float = 0.025  # Muon learning rate (2-D matrices in blocks)
    tied_embed_lr: float = 0.035  # AdamW lr of the tied embedding and the token tables (BigramHash, value embedding)
    embed_lr: float = 0.6  # AdamW lr of an untied token embedding (the challenge's EMBED_LR)
    head_lr: float = 0.008  # AdamW lr of an untied output head (no weight decay)
    scalar_lr: float = 0.025  # AdamW learning rate for scalars/control tensors
    muon_momentum: float = 0.99  # Muon momentum after warm-up
    muon_momentum_warmup_start: float = 0.92  # Muon momentum at step 0
    muon_momentum_warmup_steps: int = 1500  # steps to warm the momentum up
    muon_ns_steps: int = 5  # Newton-Schulz iterations
    muon_wd: float = 0.04  # decoupled weight decay of the Muon group
    adam_wd: float = 0.04  # decoupled weight decay of the AdamW groups (except the untied head)
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-8
    grad_clip: float = 0.3  # global grad-norm clip (0 disables)
    ema_decay: float = 0.997  # EMA of weights, applied at the end (0 disables)
    swa_every: int = 50  # SWA snapshot interval in steps (0 disables)
    swa_lr_threshold: float = 0.2  # SWA starts once lr scale < this
    val_every: int = 0  # measure val loss every N steps (0 = only at the end)
    val_max_tokens: int = 0  # cap on val tokens for intermediate evals (0 = all)
    log_every: int = 50  # metrics line every N steps
    checkpoint_every: int = 0  # atomic checkpoint every N steps (0 = only at the end)
    checkpoint_seconds: int = 0  # atomic checkpoint every N s of training time (0 = off; the CLIs default it, pgolf.presets.checkpoint_default)
    compile: str = "auto"  # "auto" (compile on CUDA, eager on CPU) | "on" | "off"
    autocast: str = "auto"  # "auto" (bf16 on CUDA) | "bf16" | "off"
    precision: str = "bf16"  # "bf16" (the seed's and the record's): fp32 master matrices, bf16 embeddings, residual stream and Muon momentum, control tensors fp32 | "fp32-master"
    optimizer_table: str = "seed"  # optimizer-group table (pgolf.train.groups.TABLES): "seed" | "v0.1" | "record"
    qat: bool = True  # progressive quantization-aware training in the warm-down
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    loader_order: str = "sequential"  # train batch order: "sequential" (the seed's) | "shuffle" (seeded per-epoch block permutation)
    threads: int = 0  # CPU threads per process (0 = CPU cores / local processes)
    final_weights: str = "ema"  # weights saved as model.pt: "ema" | "swa" | "raw" (ema/swa need ema_decay>0 / SWA snapshots)
    min_lr: float = 0.0  # floor of the lr scale in the warm-down (the record's 0.1)
    muon_ns_schedule: str = "quintic"  # Newton-Schulz coefficients: "quintic" (3.4445, -4.7750, 2.0315 each step) | "polar-express" (per step)
    muon_row_normalize: bool = False  # divide each row of the Muon update by its norm before Newton-Schulz (MuonEq-R)
    embed_wd: float = 0.085  # decoupled weight decay of the token embedding in the "record" optimizer table


@dataclass
class QuantConfig:
    """Quantization scheme and bit allocation by tensor role (DESIGN.md §6)."""

    scheme: str = "turbo"  # "turbo" | "turbo-prod" | "int6" | "int8" | "record" | "turbo-rd"
    bits_mlp_up: int = 2
    bits_mlp_down: int = 3
    bits_attn: int = 3
    bits_embed: int = 4
    fp16_max_numel: int = 65_536  # tensors with at most this many elements stay fp16
    rotation: str = "haar"  # "haar" | "hadamard"
    rotation_seed: int = 0  # seed of the random rotations (regenerated, never stored)
    codebook: str = "beta"  # "beta" (exact unit-sphere coordinate) | "gaussian"
    int_clip: float = 1.0  # int6/int8: clip the row scale at this fraction of max|w|
    codec: str = "lzma"  # "lzma" | "zstd" | "none"
    lzma_preset: int = 6
    budget_bytes: int = 16_000_000
    qat_schedule: tuple[tuple[float, int], ...] = ((0.5, 4), (0.3, 3), (0.15, 2))
    # ^ (lr_scale threshold, bits): below the threshold fake-quantize at that many bits,
    #   never below a tensor's own target bits; above the first threshold QAT is off.
    calib_batches: int = 16  # record/turbo-rd: train batches for the GPTQ Hessians (0 = round to nearest)
    gptq_damp: float = 0.01  # GPTQ damping, relative to mean(diag H)
    gptq_block: int = 128  # GPTQ lazy-update block (columns)
    gptq_act_order: bool = True  # GPTQ columns by decreasing diag(H)
    lqer_top_k: int = 3  # record: LQER on this many tensors with the largest error
    lqer_rank: int = 4  # record: rank of the LQER correction (0 = off)
    record_k_search: bool = False  # record at a width other than its own: pick k by error
    lqer_packing: str = "pgolf"  # record: LQER factors "pgolf" (U S^1/2, asymmetric groups) | "record" (the record's: U S 2-bit one scale, V^T 4-bit symmetric per 64)
    small_tensors: str = "pgolf"  # record/turbo-rd small tensors: "pgolf" (2-D int8 per row) | "record" (fp16; the attention gate int8 per row)
    target_bytes: int = 0  # turbo-rd: artifact byte target (0 = budget - code bytes)
    rd_max_iters: int = 8  # turbo-rd: encodes tried to land within 0.5% under the target


@dataclass
class EvalConfig:
    """Evaluation: windows, stride and the n-gram cache (DESIGN.md §7)."""

    seq_len: int = 0  # evaluation window (0 = the training seq_len)
    stride: int = 64  # sliding-window stride
    batch_seqs: int = 32  # windows per forward pass
    ngram: str = "causal"  # "causal" | "two-pass" | "loo" | "none"
    ngram_min_order: int = 2
    ngram_max_order: int = 12
    two_pass_buckets: int = 16_777_216  # hashed cache size of the seed's two-pass mode
    two_pass_min_count: int = 2


@dataclass
class TTTConfig:
    """Score-first test-time training at evaluation (pgolf.eval.ttt); defaults are record #1855's."""

    mode: str = "none"  # "none" | "lora" | "global" | "phased" (pgolf eval --ttt overrides)
    lora_rank: int = 80  # rank of the per-document LoRA adapters
    lora_targets: tuple[str, ...] = ("q", "k", "v", "o", "mlp", "head")  # adapted matrices
    chunk_tokens: int = 48  # tokens scored (then trained on) per LoRA step
    lora_lr: float = 1e-4  # LoRA Adam learning rate
    lora_beta1: float = 0.0
    lora_beta2: float = 0.99
    lora_weight_decay: float = 0.5  # LoRA decoupled weight decay
    global_lr: float = 1e-3  # SGD on the base weights (global / between phases)
    global_momentum: float = 0.9
    global_chunk_tokens: int = 32_768  # tokens per global SGD step (global: also the scoring block)
    global_grad_clip: float = 1.0  # grad-norm clip of the global step (0 disables)
    phase_docs: tuple[int, ...] = (833, 1666, 2500)  # phased: cumulative document-count boundaries


@dataclass
class RunConfig:
    """Everything a run needs; saved as ``RUN_DIR/config.json``."""

    preset: str = "seed"
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    ttt: TTTConfig = field(default_factory=TTTConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunConfig":
        cfg = cls(preset=_coerce(d.get("preset", "custom"), "", "preset"))
        for section in SECTIONS:
            items = dict(d.get(section, {}))
            for key, value in _legacy_items(section, items).items():
                set_field(cfg, f"{section}.{key}", value)
        return cfg


SECTIONS = ("model", "train", "quant", "eval", "ttt")

#: Values a config saved before a field existed meant (pgolf 0.1 behaviour).
LEGACY_DEFAULTS = {
    "model": {"rope_train_seq_len": 0},
    "train": {"precision": "fp32-master", "optimizer_table": "v0.1"},
}


def _legacy_items(section: str, items: dict) -> dict:
    """Translate a saved section written by pgolf 0.1 (``weight_decay``, tied ``embed_lr``)."""
    if section == "train" and "tied_embed_lr" not in items and "embed_lr" in items:
        items["tied_embed_lr"] = items.pop("embed_lr")
    if section == "train" and "weight_decay" in items:
        wd = items.pop("weight_decay")
        items.setdefault("muon_wd", wd)
        items.setdefault("adam_wd", wd)
    if items:
        for key, value in LEGACY_DEFAULTS.get(section, {}).items():
            items.setdefault(key, value)
    return items


# ------------------------------------------------------------------------- overrides

#: The challenge's environment variables and the fields they set (every one the seed's
#: script reads that has a pgolf field).
ENV_OVERRIDES: dict[str, str] = {
    "VOCAB_SIZE": "model.vocab_size",
    "NUM_LAYERS": "model.num_layers",
    "MODEL_DIM": "model.model_dim",
    "NUM_HEADS": "model.num_heads",
    "NUM_KV_HEADS": "model.num_kv_heads",
    "MLP_MULT": "model.mlp_mult",
    "LOGIT_SOFTCAP": "model.logit_softcap",
    "ROPE_BASE": "model.rope_base",
    "ROPE_DIMS": "model.rope_dims",
    "ROPE_TRAIN_SEQ_LEN": "model.rope_train_seq_len",
    "TIE_EMBEDDINGS": "model.tie_embeddings",
    "TIED_EMBED_INIT_STD": "model.tied_embed_init_std",
    "QK_GAIN_INIT": "model.q_gain_init",
    "BIGRAM_VOCAB_SIZE": "model.bigram_buckets",
    "BIGRAM_DIM": "model.bigram_dim",
    "XSA_LAST_N": "model.xsa_last_n",
    "LN_SCALE": "model.ln_scale",
    "VE_DIM": "model.value_embed_dim",
    "VE_LAYERS": "model.value_embed_layers",
    "TRAIN_SEQ_LEN": "train.seq_len",
    "TRAIN_BATCH_TOKENS": "train.batch_tokens",
    "ITERATIONS": "train.iterations",
    "WARMDOWN_ITERS": "train.warmdown_iters",
    "WARMDOWN_FRAC": "train.warmdown_frac",
    "WARMUP_STEPS": "train.warmup_steps",
    "MAX_WALLCLOCK_SECONDS": "train.max_wallclock_seconds",
    "SEED": "train.seed",
    "MATRIX_LR": "train.matrix_lr",
    "TIED_EMBED_LR": "train.tied_embed_lr",
    "EMBED_LR": "train.embed_lr",
    "HEAD_LR": "train.head_lr",
    "SCALAR_LR": "train.scalar_lr",
    "MUON_MOMENTUM": "train.muon_momentum",
    "MUON_MOMENTUM_WARMUP_START": "train.muon_momentum_warmup_start",
    "MUON_MOMENTUM_WARMUP_STEPS": "train.muon_momentum_warmup_steps",
    "MUON_BACKEND_STEPS": "train.muon_ns_steps",
    "MUON_WD": "train.muon_wd",
    "ADAM_WD": "train.adam_wd",
    "BETA1": "train.adam_beta1",
    "BETA2": "train.adam_beta2",
    "ADAM_EPS": "train.adam_eps",
    "GRAD_CLIP_NORM": "train.grad_clip",
    "EMA_DECAY": "train.ema_decay",
    "SWA_EVERY": "train.swa_every",
    "VAL_LOSS_EVERY": "train.val_every",
    "TRAIN_LOG_EVERY": "train.log_every",
    "EVAL_SEQ_LEN": "eval.seq_len",
    "EVAL_STRIDE": "eval.stride",
    # the record stack's (#1855) switches and recipe
    "NUM_LOOPS": "model.num_loops",
    "LOOP_START": "model.loop_start",
    "LOOP_END": "model.loop_end",
    "ENABLE_LOOPING_AT": "model.enable_looping_at",
    "PARALLEL_START_LAYER": "model.parallel_start_layer",
    "SKIP_GATES_ENABLED": "model.skip_gates",
    "SPARSE_ATTN_GATE_ENABLED": "model.sparse_attn_gate",
    "SPARSE_ATTN_GATE_SCALE": "model.sparse_attn_gate_scale",
    "GATE_WINDOW": "model.gate_window",
    "SMEAR_GATE_ENABLED": "model.smear_gate",
    "MIN_LR": "train.min_lr",
    "EMBED_WD": "train.embed_wd",
    "MUON_ROW_NORMALIZE": "train.muon_row_normalize",
}

#: On/off variables: a false value sets the field to the given "off" value.
ENV_SWITCHES: dict[str, tuple[str, Any]] = {
    "VE_ENABLED": ("model.value_embed_dim", 0),
    "SWA_ENABLED": ("train.swa_every", 0),
}

#: Names the challenge's scripts read that pgolf does not (a warning, never silence).
#: DATA_PATH, TOKENIZER_PATH and RUN_ID are read by ``pgolf train`` itself.
ENV_UNREAD = ("EMA_ENABLED", "LATE_QAT", "LATE_QAT_THRESHOLD", "QAT_ENABLED", "TTT_ENABLED", "TTT_LR",
              "TTT_EPOCHS", "MUON_WEIGHT_DECAY", "ADAM_WEIGHT_DECAY", "EVAL_BATCH_SEQS", "VAL_BATCH_SIZE")
ENV_READ_ELSEWHERE = ("DATA_PATH", "TOKENIZER_PATH", "RUN_ID")


#: Allowed values (inclusive) of the numeric fields: ``(low, high): "field ..."``, the first
#: entry naming ``section.name`` or ``name`` wins (a tuple field: each of its numbers). Floats
#: not listed take 0..1, ints 0..2**31. The caps bound what drives memory and time (README).
RANGES: dict[tuple, str] = {
    (0, 9): "bits_mlp_up bits_mlp_down bits_attn bits_embed lzma_preset qat_schedule",
    (2, 64): "ngram_min_order ngram_max_order",
    (2, 65536): "vocab_size",
    (0, 16): "num_loops",
    (1, 4096): "batch_seqs lora_rank muon_ns_steps rd_max_iters",
    (1, 2**31): "train.seq_len num_layers model_dim num_heads num_kv_heads batch_tokens micro_batch_seqs "
                "iterations gptq_block chunk_tokens global_chunk_tokens",
    (0, 1 << 17): "seq_len stride",
    (1, 1 << 26): "two_pass_buckets",
    (1, 1e9): "rope_base",
    (0, 1e9): "mlp_mult logit_softcap q_gain_init sparse_attn_gate_scale max_wallclock_seconds grad_clip global_grad_clip",
}


def config_overrides(run_config: dict) -> dict:
    """The sections and fields of ``run_config`` (a RunConfig dict) whose values differ from a
    default ``RunConfig()``, plus ``preset``: what the script stores (the defaults travel in
    the bundled pgolf/config.py, so the seed preset's config is almost empty)."""
    defaults = json.loads(json.dumps(RunConfig().to_dict()))
    given = json.loads(json.dumps(run_config))
    out = {"preset": given.get("preset", "custom")}
    for section, fields in defaults.items():
        if isinstance(fields, dict):
            diff = {k: v for k, v in (given.get(section) or {}).items() if fields.get(k, v) != v or k not in fields}
            if diff:
                out[section] = diff
    return out


def check_range(key: str, value) -> None:
    """RangeError unless every number in ``value``, the value of field ``key`` (``section.name``),
    lies in the field's range (the first entry of :data:`RANGES` naming it)."""
    if isinstance(value, tuple):
        for v in value:
            check_range(key, v)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        names = {key, key.split(".")[1]}
        lo, hi = next((r for r, f in RANGES.items() if names & set(f.split())),
                      (0, 1) if isinstance(value, float) else (0, 2**31))
        if not lo <= value <= hi:
            raise RangeError(f"{key}={value!r} is outside its allowed range {lo}..{hi}")


def flag_number(kind: type = int, lo: float = 0, hi: float = 2**31 - 1):
    """An argparse ``type`` for a numeric flag: a finite ``kind`` in ``lo..hi`` (else argparse
    names the flag and exits 2)."""
    import argparse

    def parse(text: str):
        try:
            v = float(text.replace("_", ""))
        except ValueError:
            v = math.nan
        if not (lo <= v <= hi and (kind is float or v == int(v))):
            raise argparse.ArgumentTypeError(f"expected {'a number' if kind is float else 'an integer'} "
                                             f"in {lo}..{hi}, got {text!r}")
        return kind(v)

    return parse


def _field_types(obj: Any) -> dict[str, Any]:
    return {f.name: f for f in dataclasses.fields(obj)}


def find_section(cfg: RunConfig, key: str) -> tuple[Any, str]:
    if "." in key:
        section, name = key.split(".", 1)
        if section not in SECTIONS:
            raise ConfigError(f"unknown config section {section!r} in {key!r}")
        target = getattr(cfg, section)
        if name not in _field_types(target):
            raise ConfigError(f"unknown config key {key!r}")
        return target, name
    hits = [s for s in SECTIONS if key in _field_types(getattr(cfg, s))]
    if not hits:
        raise ConfigError(f"unknown config key {key!r}")
    if len(hits) > 1:
        raise ConfigError(f"ambiguous config key {key!r}: use one of " + ", ".join(f"{s}.{key}" for s in hits))
    return getattr(cfg, hits[0]), key


def _coerce(value: Any, current: Any, key: str) -> Any:
    """Convert ``value`` (often a string) to the type of ``current``."""
    try:
        if isinstance(current, bool):
            if isinstance(value, bool):
                return value
            s = str(value).strip().lower()
            if s in ("1", "true", "yes", "on"):
                return True
            if s in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if isinstance(current, int):
            f = float(value.replace("_", "") if isinstance(value, str) else value)
            if not math.isfinite(f):
                return f  # in no range: set_field names it
            if f != int(f):
                raise ValueError(value)
            return int(f)
        if isinstance(current, float):
            return float(value.replace("_", "") if isinstance(value, str) else value)
        if isinstance(current, tuple):
            if isinstance(value, str):
                value = json.loads(value) if value.strip().startswith("[") else [
                    v for v in value.split(",") if v.strip()
                ]
            proto = current[0] if current else 0
            return tuple(_coerce(v, proto, key) for v in value) if not isinstance(proto, tuple) else tuple(
                tuple(_coerce(x, p, key) for x, p in zip(v, proto, strict=True)) for v in value)
        if isinstance(current, str) and isinstance(value, str) and re.fullmatch(r"[\w.:+-]{0,64}", str(value)):
            return str(value)
        raise ValueError(value)
    except (ValueError, TypeError, OverflowError, json.JSONDecodeError):
        raise ConfigError(f"bad value {str(value)[:60]!r} for {key} (expected {type(current).__name__})") from None


def set_field(cfg: RunConfig, key: str, value: Any) -> None:
    """Set one field by (optionally section-qualified) name, converting the value."""
    target, name = find_section(cfg, key)
    value = _coerce(value, getattr(target, name), key)
    check_range(next(f"{s}.{name}" for s in SECTIONS if getattr(cfg, s) is target), value)
    setattr(target, name, value)


def apply_sets(cfg: RunConfig, sets: list[str] | None) -> RunConfig:
    """Apply ``key=value`` strings in order."""
    for item in sets or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        set_field(cfg, key.strip(), value.strip())
    return cfg


def apply_env(cfg: RunConfig, env: Mapping[str, str] | None) -> RunConfig:
    """Apply the challenge's environment variables present in ``env``; warn (stderr) on
    look-alikes that pgolf does not read (see :func:`env_warnings`)."""
    env = env or {}
    for var, key in ENV_OVERRIDES.items():
        if env.get(var, "") != "":
            set_field(cfg, key, env[var])
    for var, (key, off) in ENV_SWITCHES.items():
        if env.get(var, "") != "" and not _coerce(env[var], True, var):
            set_field(cfg, key, off)
    for line in env_warnings(cfg, env):
        print(f"pgolf: warning: {line}", file=sys.stderr)
    return cfg


def env_warnings(cfg: RunConfig, env: Mapping[str, str]) -> list[str]:
    """One line per set variable that looks like a setting but is not read: a known
    challenge name without a pgolf equivalent, or a config field's upper-case spelling."""
    known = set(ENV_OVERRIDES) | set(ENV_SWITCHES) | set(ENV_READ_ELSEWHERE)
    lines = [f"environment variable {var} (a challenge script's setting) has no pgolf equivalent; ignored"
             for var in ENV_UNREAD if var in env]
    for section in SECTIONS:
        for name in _field_types(getattr(cfg, section)):
            var = name.upper()
            if var in env and var not in known and var not in ENV_UNREAD:
                lines.append(f"environment variable {var} is not read; use --set {section}.{name}=...")
    return lines


#: The optimizer-group tables' names (pgolf.train.groups.TABLES holds them; a test keeps both equal).
OPTIMIZER_TABLES = ("seed", "v0.1", "record")


def validate(cfg: RunConfig) -> RunConfig:
    """Check cross-field constraints; raise ConfigError naming the problem."""
    m, t = cfg.model, cfg.train
    if m.model_dim % m.num_heads:
        raise ConfigError(f"model_dim {m.model_dim} is not divisible by num_heads {m.num_heads}")
    if m.num_heads % m.num_kv_heads:
        raise ConfigError(f"num_heads {m.num_heads} is not divisible by num_kv_heads {m.num_kv_heads}")
    head_dim = m.model_dim // m.num_heads
    if head_dim % 2 or m.rope_dims % 2 or m.rope_dims > head_dim:
        raise ConfigError(f"rope_dims {m.rope_dims} must be even and <= head_dim {head_dim}")
    _validate_record_switches(m)
    bad = [i for i in m.value_embed_layers if not 0 <= i < m.num_layers]
    if m.value_embed_dim and bad:
        raise ConfigError(f"value_embed_layers {bad} outside 0..{m.num_layers - 1}")
    if t.batch_tokens % t.seq_len:
        raise ConfigError(f"batch_tokens {t.batch_tokens} is not a multiple of seq_len {t.seq_len}")
    if cfg.quant.scheme not in ("turbo", "turbo-prod", "int6", "int8", "record", "turbo-rd"):
        raise ConfigError(f"unknown quantization scheme {cfg.quant.scheme!r}")
    if {cfg.quant.lqer_packing, cfg.quant.small_tensors} - {"pgolf", "record"}:
        raise ConfigError("quant.lqer_packing and quant.small_tensors must be pgolf or record")
    if t.muon_ns_schedule not in ("quintic", "polar-express"):
        raise ConfigError(f"muon_ns_schedule must be quintic or polar-express, got {t.muon_ns_schedule!r}")
    if t.muon_ns_schedule == "polar-express" and not 1 <= t.muon_ns_steps <= 5:
        raise ConfigError(f"polar-express has coefficients for 1..5 Newton-Schulz steps, got muon_ns_steps={t.muon_ns_steps}")
    if cfg.eval.ngram not in ("causal", "two-pass", "loo", "none"):
        raise ConfigError(f"unknown n-gram mode {cfg.eval.ngram!r}")
    if t.precision not in ("bf16", "fp32-master"):
        raise ConfigError(f"train.precision must be bf16 or fp32-master, got {t.precision!r}")
    if m.rope_train_seq_len and (m.rope_dims or head_dim) <= 2:
        raise ConfigError(f"rope_train_seq_len {m.rope_train_seq_len} needs more than 2 rotary dims (0 = never rescale)")
    if t.optimizer_table not in OPTIMIZER_TABLES:  # the tables themselves: pgolf.train.groups.TABLES
        raise ConfigError(f"unknown optimizer_table {t.optimizer_table!r}; choose one of: {', '.join(OPTIMIZER_TABLES)}")
    return cfg


def _validate_record_switches(m: ModelConfig) -> None:
    if m.smear_mode not in ("channel", "window"):
        raise ConfigError(f"smear_mode must be channel or window, got {m.smear_mode!r}")
    if (m.sparse_attn_gate or m.smear_mode == "window") and not 0 < m.gate_window <= m.model_dim:
        raise ConfigError(f"gate_window {m.gate_window} must be in 1..model_dim {m.model_dim}")
    if m.num_loops and not m.loop_start <= m.loop_end < m.num_layers:
        raise ConfigError(f"depth recurrence needs loop_start <= loop_end < num_layers, got "
                          f"{m.num_loops}, {m.loop_start}..{m.loop_end} of {m.num_layers}")
    if m.parallel_start_layer >= max(m.num_layers, 1):
        raise ConfigError(f"parallel_start_layer {m.parallel_start_layer} outside 0..{m.num_layers - 1} (0 disables)")
