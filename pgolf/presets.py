"""Named presets and preset resolution: a preset, then environment variables, then ``--set``.

Presets are named functions returning a fresh :class:`pgolf.config.RunConfig` (``seed``:
the parameter-golf seed system exactly; ``tiny``: the same features at laptop-CPU size;
``record``: record #1855's stack). :func:`resolve_config` applies the challenge's
environment variables and ``--set key=value`` overrides (:mod:`pgolf.config`) on top of
a preset, moves the preset's layer positions to an overridden depth
(:data:`DEPTH_RELATIVE`) and validates. The CLIs use it; a generated train_gpt.py never
does (it reads its config from run_config.json), so this module is not bundled. Example::

    cfg = resolve_config("tiny", sets=["max_wallclock_seconds=300"], env=os.environ)
"""

from __future__ import annotations

import sys
from typing import Callable, Mapping

from pgolf.config import (ENV_OVERRIDES, ENV_SWITCHES, SECTIONS, RunConfig, apply_env, apply_sets, find_section,
                          validate)
from pgolf.errors import ConfigError


def preset_seed() -> RunConfig:
    """The seed system exactly: 13L/576d GPT, 44,258,604 parameters, 8xH100 recipe.

    The dataclass defaults are the seed's script, with one choice: value embeddings on
    layers 11,12 as the seed's README says (its script's default is 9,10; set
    ``VE_LAYERS=9,10`` for that). RoPE rescaled above 1024 tokens, bf16 precision and
    the seed's optimizer groups as its script does.

    ``model.doc_isolation`` stays off: the seed's SmearGate and BigramHash mix the
    previous document's last token into each BOS position, and this preset keeps that.
    """
    return RunConfig(preset="seed")


def preset_tiny() -> RunConfig:
    """Same features as ``seed`` at laptop size: trains on 2 CPU cores in minutes.

    Tuned for 300 s on 2 CPU cores (FineWeb sp1024): width 128 keeps tokens/s high;
    the wall-clock warm-down is the last 40% of the cap; EMA 0.95 suits a few hundred
    steps (0.997 would still weigh the initial weights); batches are shuffled blocks.
    """
    cfg = RunConfig(preset="tiny")
    m = cfg.model
    m.num_layers, m.model_dim, m.num_heads, m.num_kv_heads = 4, 128, 4, 2
    m.mlp_mult, m.rope_dims = 3.0, 16
    m.bigram_buckets, m.bigram_dim, m.value_embed_dim = 2048, 64, 64
    m.xsa_last_n, m.value_embed_layers = 1, (2, 3)
    t = cfg.train
    t.seq_len, t.batch_tokens, t.micro_batch_seqs = 256, 8192, 32
    t.iterations, t.warmup_steps, t.warmdown_iters = 2000, 0, 400
    t.max_wallclock_seconds, t.warmdown_frac = 300.0, 0.4
    t.matrix_lr, t.tied_embed_lr, t.scalar_lr = 0.02, 0.03, 0.02
    t.muon_momentum_warmup_steps = 100
    t.ema_decay, t.swa_every, t.loader_order = 0.95, 5, "shuffle"
    t.log_every = 10
    cfg.eval.batch_seqs = 16
    # At width 128 every block matrix is under the seed's 65,536-element fp16 cut-off;
    # lower it so tiny quantizes its attention/MLP matrices as the seed does at d=576.
    cfg.quant.fp16_max_numel = 4096
    # Score-first TTT sized for a CPU evaluation of the 663K-token dev split (248 documents):
    # rank 8 at width 128, 128-token chunks (half the forward passes of 64), phases at
    # 4/8/12 of the 247 documents: the record's 833/1666/2500 of 50K (the first 5%), scaled;
    # the record's values stay the TTTConfig defaults.
    tt = cfg.ttt
    tt.lora_rank, tt.chunk_tokens, tt.global_chunk_tokens, tt.phase_docs = 8, 128, 8192, (4, 8, 12)
    # Kept as tiny was before the seed-fidelity changes (other runs compare against it):
    # no RoPE rescaling, fp32 master weights, the v0.1 optimizer routing.
    m.rope_train_seq_len, t.precision, t.optimizer_table = 0, "fp32-master", "v0.1"
    return cfg


def preset_record() -> RunConfig:
    """Record #1855 (val_bpb 1.0611; FACTS.md): 11L/512d on SP8192 CaseOps data, 35,945,671 params.

    Copied from the record's README and its seed-42 log: architecture (depth recurrence
    over layers 3-5, two parallel lanes from layer 8, XSA on all layers, skip gates, sparse
    attention gate, window SmearGate with the BOS fix, QK gain 5.0, no BigramHash or value
    embeddings, document-isolated attention) and training recipe, with its quantization
    (``quant.scheme=record``: GPTQ + LQER) and its phased score-first TTT by default. What
    pgolf does not implement is listed in README.md (stage "record preset").
    """
    cfg = RunConfig(preset="record")
    m = cfg.model
    m.vocab_size, m.num_layers, m.model_dim, m.num_heads, m.num_kv_heads = 8192, 11, 512, 8, 4
    m.mlp_mult, m.rope_dims, m.q_gain_init, m.xsa_last_n = 4.0, 16, 5.0, 11
    m.bigram_buckets, m.value_embed_dim, m.value_embed_layers = 0, 0, ()
    m.smear_mode, m.gate_window, m.doc_isolation = "window", 12, True
    m.doc_attention, m.doc_segment_len = True, 2048  # attention inside documents, cut every train_seq_len
    m.sparse_attn_gate, m.sparse_attn_gate_scale, m.skip_gates = True, 0.5, True
    m.parallel_start_layer = 8
    m.num_loops, m.loop_start, m.loop_end, m.enable_looping_at = 2, 3, 5, 0.35
    m.rope_train_seq_len = 2048
    t = cfg.train
    t.seq_len, t.batch_tokens, t.warmup_steps, t.warmdown_frac = 2048, 786_432, 20, 0.85
    t.matrix_lr, t.scalar_lr, t.tied_embed_lr, t.embed_lr = 0.026, 0.02, 0.03, 0.6
    t.optimizer_table, t.muon_wd, t.adam_wd, t.embed_wd = "record", 0.095, 0.02, 0.085
    t.muon_momentum, t.muon_momentum_warmup_start, t.muon_momentum_warmup_steps, t.muon_ns_steps = 0.97, 0.92, 1500, 5
    t.adam_beta1, t.adam_beta2, t.adam_eps, t.grad_clip = 0.9, 0.99, 1e-8, 0.3
    t.ema_decay, t.swa_every, t.qat, t.min_lr = 0.9965, 0, False, 0.1
    t.muon_ns_schedule, t.muon_row_normalize = "polar-express", True
    cfg.eval.seq_len, cfg.eval.stride, cfg.eval.ngram = 2048, 64, "none"
    cfg.quant.scheme = "record"  # GPTQ int6/int7 + LQER; CPU users: --set quant.scheme=int6
    cfg.ttt.mode = "phased"  # the record's score-first phased TTT; CPU users: --set ttt.mode=none
    return cfg


PRESETS: dict[str, Callable[[], RunConfig]] = {"seed": preset_seed, "tiny": preset_tiny, "record": preset_record}

#: Presets whose layer positions are written for their own depth (the record's 11 layers):
#: when ``num_layers`` is overridden and these fields are not, they follow the depth
#: proportionally (see :func:`follow_depth`).
DEPTH_RELATIVE: dict[str, tuple[str, ...]] = {
    "record": ("loop_start", "loop_end", "parallel_start_layer", "xsa_last_n"),
}


def get_preset(name: str) -> RunConfig:
    """Return a fresh copy of the named preset, or raise ConfigError."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]()


def explicit_keys(cfg: RunConfig, sets: list[str] | None, env: Mapping[str, str] | None) -> set[str]:
    """``section.name`` of every field that ``--set`` items or environment variables set."""
    keys = {key for var, key in ENV_OVERRIDES.items() if (env or {}).get(var, "") != ""}
    keys |= {key for var, (key, _) in ENV_SWITCHES.items() if (env or {}).get(var, "") != ""}
    for item in sets or []:
        target, name = find_section(cfg, item.split("=", 1)[0].strip())
        keys.add(next(f"{s}.{name}" for s in SECTIONS if getattr(cfg, s) is target))
    return keys


def _scale_layer(value: int, base_layers: int, num_layers: int, name: str) -> int:
    """A layer position written for ``base_layers`` at ``num_layers``: round(value * L / L0),
    kept inside the model (an index <= L-1, ``parallel_start_layer`` >= 1 while on, a count <= L)."""
    new = int(value * num_layers / base_layers + 0.5)
    if name == "xsa_last_n":
        return min(new, num_layers)
    if name == "parallel_start_layer" and value > 0:
        new = max(new, 1) if num_layers > 1 else 0  # one layer has no room for lanes: off
    return min(new, num_layers - 1)


def follow_depth(cfg: RunConfig, explicit: set[str]) -> list[str]:
    """Move the preset's layer positions (:data:`DEPTH_RELATIVE`) to an overridden
    ``num_layers`` proportionally, except fields in ``explicit`` (those win, and are
    validated as given); return one ``name old->new`` entry per field moved."""
    names = DEPTH_RELATIVE.get(cfg.preset, ())
    base = get_preset(cfg.preset).model if names else None
    m = cfg.model
    if base is None or m.num_layers == base.num_layers or m.num_layers < 1:
        return []
    moved = []
    for name in names:
        old = getattr(base, name)
        if f"model.{name}" in explicit or getattr(m, name) != old:
            continue
        setattr(m, name, _scale_layer(old, base.num_layers, m.num_layers, name))
        moved.append(f"{name} {old}->{getattr(m, name)}")
    return moved


#: Wall-time checkpoint interval (s of training time) that the CLIs give a run by default.
CHECKPOINT_SECONDS = 300
#: A run whose wall-clock cap is at most this is timed as a challenge run: no checkpoint inside it by default.
CHALLENGE_CAP_S = 600.0


def challenge_timed(cfg: RunConfig) -> bool:
    """The training loop is a challenge's timed loop: a cap of at most 600 s, or any cap on the
    seed/record presets (whose runs are the challenge's 600 s on 8xH100)."""
    cap = cfg.train.max_wallclock_seconds
    return 0 < cap <= CHALLENGE_CAP_S or (cap > 0 and cfg.preset in ("seed", "record"))


def checkpoint_default(cfg: RunConfig, explicit: set[str]) -> None:
    """Periodic checkpoints by default: ``train.checkpoint_seconds`` = :data:`CHECKPOINT_SECONDS`
    unless it was set explicitly or the run is :func:`challenge_timed` (then 0: nothing is written
    inside the timed loop unless asked; the end-of-run and Ctrl-C checkpoints stay)."""
    if "train.checkpoint_seconds" not in explicit:
        cfg.train.checkpoint_seconds = 0 if challenge_timed(cfg) else CHECKPOINT_SECONDS


def fit_micro_batch(cfg: RunConfig, world: int, explicit: set[str] = frozenset()) -> str | None:
    """Fit ``train.micro_batch_seqs`` to ``world`` processes so that seq_len x micro_batch_seqs x
    world divides batch_tokens (the global batch, so the training, stays the same): the largest
    divisor of the per-process sequences not above the configured micro-batch. Returns a note
    when it changed, None when it fitted; ConfigError (one line naming the setting) when the
    batch cannot be split or the micro-batch was set explicitly."""
    t = cfg.train
    if world < 1 or t.batch_tokens % (t.seq_len * t.micro_batch_seqs * world) == 0:
        return None
    seqs, rest = divmod(t.batch_tokens, t.seq_len * world)
    if rest or not seqs:
        raise ConfigError(f"train.batch_tokens={t.batch_tokens} does not split into {world} processes x sequences of "
                          f"{t.seq_len}: set train.batch_tokens to a multiple of {t.seq_len * world}")
    if "train.micro_batch_seqs" in explicit:
        raise ConfigError(f"train.micro_batch_seqs={t.micro_batch_seqs} does not fit {world} processes: each gets "
                          f"{seqs} sequences per step; set train.micro_batch_seqs to a divisor of {seqs}")
    old = t.micro_batch_seqs
    t.micro_batch_seqs = max(d for d in range(1, min(old, seqs) + 1) if seqs % d == 0)
    return (f"pgolf: note: train.micro_batch_seqs {old} -> {t.micro_batch_seqs} so that {world} processes split "
            f"batch_tokens {t.batch_tokens} (seq_len {t.seq_len}); accumulation {seqs // t.micro_batch_seqs}, "
            "the same global batch")


def world_size(env: Mapping[str, str] | None) -> int:
    """torchrun's WORLD_SIZE in ``env`` (1 without it)."""
    try:
        return max(1, int((env or {}).get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def resolve_config(
    preset: str, sets: list[str] | None = None, env: Mapping[str, str] | None = None
) -> RunConfig:
    """Preset, then environment variables, then ``--set`` overrides, then the preset's
    layer positions follow an overridden depth (a note on stderr), periodic checkpoints are
    switched on outside challenge-timed runs (:func:`checkpoint_default`), the micro-batch fits
    torchrun's WORLD_SIZE (:func:`fit_micro_batch`, a note on stderr); validated."""
    cfg = get_preset(preset)
    apply_env(cfg, env)
    apply_sets(cfg, sets)
    explicit = explicit_keys(cfg, sets, env)
    moved = follow_depth(cfg, explicit)
    if moved:
        base = get_preset(preset).model.num_layers
        print(f"pgolf: note: preset {preset}'s layer positions (written for {base} layers) follow "
              f"num_layers={cfg.model.num_layers}: {', '.join(moved)} (--set a field to choose it)", file=sys.stderr)
    checkpoint_default(cfg, explicit)
    validate(cfg)
    note = fit_micro_batch(cfg, world_size(env), explicit)
    if note and (env or {}).get("RANK", "0") == "0":
        print(note, file=sys.stderr)
    return cfg
