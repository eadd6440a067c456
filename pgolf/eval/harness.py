"""The evaluation behind ``pgolf eval`` and the pipeline's eval stage: one function, :func:`run_eval`.

A run directory evaluates its ``model.pt`` (``artifact=True``: its ``artifact.pgz``); a
``.pgz`` file is decoded first. Data and tokenizer come from the arguments, else from the
run's ``config.json``, else ``DATA_DIR/tokenizer.model``. The passes: standard and
sliding-window neural evaluation, then the n-gram cache (``causal``: the audited
mixture of :mod:`pgolf.eval.mixture`; the leaky ``two-pass``/``loo`` through
:mod:`pgolf.features`), then (``ttt`` not ``none``) score-first TTT
(:func:`pgolf.eval.ttt.run_ttt`, also through :mod:`pgolf.features`) with the causal
n-gram mixed on its outputs; ``score`` names the headline (TTT + n-gram > TTT > n-gram >
sliding > standard, legal methods only). Under ``torchrun`` the windows (and TTT
documents) are shared across ranks; rank 0 runs the n-gram pass and writes ``eval.json``
atomically. Printing is the caller's (:mod:`pgolf.eval.commands` shows the table).

    result = run_eval("runs/x/artifact.pgz", out="runs/x/eval.json", ngram="causal")
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from pgolf.collectives import broadcast_object
from pgolf.errors import ConfigError, PgolfError

NGRAM_MODES = ("causal", "two-pass", "loo", "none")
TTT_MODES = ("none", "lora", "global", "phased")


def check_orders(orders, what: str = "n-gram orders") -> tuple[int, int]:
    """(min, max) if 2 <= min <= max <= 64 (what the n-gram modes accept), else ConfigError."""
    a, b = (int(o) for o in orders)
    if not 2 <= a <= b <= 64:
        raise ConfigError(f"{what}: need 2 <= MIN <= MAX <= 64, got {a}-{b}")
    return a, b


def _resolve_data(data_dir, tokenizer, loaded) -> tuple[Path, Path]:
    data = data_dir or loaded.data_dir
    if not data:
        raise PgolfError(f"{loaded.path}: no validation data known for this model; pass --data DIR")
    data = Path(data)
    if not data.is_dir():
        raise PgolfError(f"{data}: data directory not found")
    tok = tokenizer or loaded.tokenizer or (data / "tokenizer.model")
    tok = Path(tok)
    if not tok.is_file():
        raise PgolfError(f"{tok}: tokenizer not found; pass --tokenizer FILE")
    return data, tok


def _dist_setup(device: str):
    """(DistEnv, owned): joins torchrun's process group, initializing it if nobody has yet.

    A single process keeps the caller's torch thread settings.
    """
    import torch.distributed as dist

    from pgolf.train.distributed import DistEnv, pick_device, setup

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        owned = not dist.is_initialized()
        return setup(device), owned
    return DistEnv(device=pick_device(device)), False


def _broadcast(obj, env):
    return broadcast_object(obj) if env.distributed else obj


def _load_inputs(source, data_dir, tokenizer, artifact, device, max_tokens):
    """(Loaded model, byte tables, validation tokens, data dir, tokenizer path, per-token bytes or None)."""
    from pgolf.data.loader import load_val_bytes
    from pgolf.data.shards import load_tokens
    from pgolf.data.tokenizer import byte_tables
    from pgolf.eval.loading import load_for_eval

    loaded = load_for_eval(source, artifact=artifact, device=device)
    vocab = loaded.cfg.model.vocab_size
    data, tok = _resolve_data(data_dir, tokenizer, loaded)
    tables = byte_tables(tok)
    if tables.vocab_size != vocab:
        raise PgolfError(f"{tok}: vocabulary {tables.vocab_size} does not match the model's {vocab}")
    tokens = load_tokens(data, "val", vocab_size=vocab)
    if max_tokens and max_tokens > 0:
        tokens = tokens[:max_tokens]
    return loaded, tables, tokens, data, tok, load_val_bytes(data, len(tokens))


def _neural(model, tokens, tables, stride, need_arrays, timings, **common):
    """Standard and (stride > 0) sliding evaluation -> (standard result, json block, per-token arrays)."""
    from pgolf.model.bpb import evaluate

    t0 = time.perf_counter()
    std = evaluate(model, tokens, tables, per_token=need_arrays and not stride, **common)
    timings["standard_s"] = time.perf_counter() - t0
    block = {"standard": {"val_loss": std.loss, "val_bpb": std.bpb}}
    if not stride:
        return std, block, std.per_token
    t0 = time.perf_counter()
    sl = evaluate(model, tokens, tables, stride=stride, per_token=need_arrays, **common)
    timings["sliding_s"] = time.perf_counter() - t0
    block["sliding"] = {"val_loss": sl.loss, "val_bpb": sl.bpb, "stride": stride}
    return std, block, sl.per_token


def _ngram(mode, tokens, seq_len, arrays, vocab, orders, progress, env, timings, opts=None, key="ngram_s"):
    """(n-gram block, per-target mixed log-probs or None), computed on rank 0 and shared with every rank.

    ``causal`` is the audited mixture of :mod:`pgolf.eval.mixture`; the leaky modes keep
    :func:`pgolf.eval.ngram_leaky.evaluate_ngram` (``opts``: their hashed-table settings) and
    never yield per-target scores.
    """
    import numpy as np

    from pgolf.model.bpb import val_stream

    out = None
    if env.rank == 0:
        t0 = time.perf_counter()
        stream = val_stream(np.asarray(tokens), seq_len)
        if mode == "causal":
            from pgolf.eval.mixture import causal_block

            out = causal_block(stream, arrays["logp"], arrays["entropy"], arrays["bytes"], vocab, orders,
                               progress=progress)
        else:
            from pgolf import features

            leaky = features.load("eval.ngram", mode)
            out = (leaky.evaluate_ngram(mode, stream, arrays["logp"], arrays["entropy"], arrays["bytes"], vocab,
                                        orders[0], orders[1], progress=progress, **(opts or {})), None)
        timings[key] = time.perf_counter() - t0
    return _broadcast(out, env)


def _bytes_of(tables, token_bytes):
    """stream -> bytes of each target stream[1:], as the neural evaluation counts them (byte files if any)."""
    import numpy as np

    if token_bytes is None:
        return lambda stream: tables.target_bytes(stream[1:], stream[:-1])
    return lambda stream: np.asarray(token_bytes[1:len(stream)], dtype=np.int64)


def _headline(neural: dict, ngram_block: dict, ngram_mix, ttt_block: dict | None, arrays, ttt_arrays) -> tuple:
    """(score block, per-target log-probs or None): TTT+n-gram > TTT > n-gram > sliding > standard (legal only)."""
    import math

    import numpy as np

    cands = []
    if ttt_block is not None:
        if ttt_block.get("ngram") is not None:
            cands.append((f"ttt-{ttt_block['mode']}+ngram-causal", ttt_block.get("_mix")))
        cands.append((f"ttt-{ttt_block['mode']}", ttt_arrays["logp"]))
    if ngram_block.get("mode") == "causal":
        cands.append(("sliding+ngram-causal" if "sliding" in neural else "standard+ngram-causal", ngram_mix))
    cands.append(("sliding" if "sliding" in neural else "standard", arrays["logp"] if arrays else None))
    method, logp = cands[0]
    if logp is None:
        src = neural[method]
        return {"method": method, "val_loss": src["val_loss"], "val_bpb": src["val_bpb"]}, None
    nbytes = float(np.sum((ttt_arrays or arrays)["bytes"], dtype=np.float64))
    nats = -float(np.sum(logp, dtype=np.float64))
    return {"method": method, "val_loss": nats / len(logp), "val_bpb": nats / math.log(2) / nbytes}, logp


def run_eval(source, out, data_dir=None, tokenizer=None, stride: int | None = None, ngram: str | None = None,
             orders: tuple[int, int] | None = None, max_tokens: int = 0, seq_len: int | None = None,
             batch_seqs: int | None = None, artifact: bool = False, device: str = "auto", progress: bool = True,
             ttt: str | None = None, per_token=None, sets: list[str] | None = None, show=None) -> dict:
    """Evaluate a run directory or artifact; write eval.json to ``out`` (rank 0) and return its dict.

    ``stride``/``ngram``/``orders``/``seq_len``/``batch_seqs``/``ttt`` default to the run's
    config; ``stride=0`` skips the sliding evaluation (the n-gram pass then uses the
    standard evaluation's per-token arrays). ``sets``: ``eval.*``/``ttt.*`` overrides.
    ``per_token``: a ``.npy`` file for the NLL (nats, float64) of every target of the
    headline score (``score``), in stream order. ``show(result, written_paths)`` is called
    on rank 0 once the files are written (``pgolf eval`` prints its table there).
    """
    if ngram is not None and ngram not in NGRAM_MODES:
        raise ConfigError(f"unknown n-gram mode {ngram!r}; choose one of {', '.join(NGRAM_MODES)}")
    t_start = time.perf_counter()
    env, owned = _dist_setup(device)
    try:
        loaded, tables, tokens, data, tok, token_bytes = _load_inputs(source, data_dir, tokenizer, artifact, env.device,
                                                                      max_tokens)
        cfg = _eval_sets(loaded.cfg, sets)
        ev = cfg.eval
        stride = ev.stride if stride is None else int(stride)
        ngram, ttt = ngram or ev.ngram, ttt or cfg.ttt.mode
        _check_ttt(ttt, cfg.ttt)
        orders = tuple(orders or (ev.ngram_min_order, ev.ngram_max_order))
        if ngram != "none":  # before the neural pass, not after it
            check_orders(orders, "eval n-gram orders")
        seq_len = int(seq_len or ev.seq_len or cfg.train.seq_len)
        batch_seqs = int(batch_seqs or ev.batch_seqs)
        timings = {"load_s": time.perf_counter() - t_start}
        std, neural, arrays = _neural(loaded.model, tokens, tables, stride, ngram != "none" or per_token is not None,
                                      timings, seq_len=seq_len, batch_seqs=batch_seqs, device=env.device,
                                      progress=progress, token_bytes=token_bytes)
        ngram_block, ngram_mix = {"mode": "none"}, None
        if ngram != "none":
            hashed = {"buckets": ev.two_pass_buckets, "min_count": ev.two_pass_min_count}
            ngram_block, ngram_mix = _ngram(ngram, tokens, seq_len, arrays, cfg.model.vocab_size, orders, progress,
                                            env, timings, hashed if ngram in ("two-pass", "loo") else None)
        ttt_block, ttt_arrays = None, None
        if ttt != "none":
            from pgolf import features

            ttt_block, ttt_arrays = features.load("ttt.mode", ttt).run_ttt(
                ttt, loaded.model, tokens, _bytes_of(tables, token_bytes), seq_len, batch_seqs, cfg, env, progress,
                timings)
            if ngram == "causal":
                ttt_block["ngram"], ttt_block["_mix"] = _ngram(ngram, tokens, seq_len, ttt_arrays,
                                                               cfg.model.vocab_size, orders, progress, env, timings,
                                                               key="ttt_ngram_s")
        timings = _broadcast(timings, env)
        score, nll_logp = _headline(neural, ngram_block, ngram_mix, ttt_block, arrays, ttt_arrays)
        if ttt_block is not None:
            ttt_block.pop("_mix", None)
        timings["total_s"] = time.perf_counter() - t_start
        result = {
            "tokens": std.tokens, "bytes": std.bytes, "seq_len": seq_len, "neural": neural, "ngram": ngram_block,
            "ttt": ttt_block or {"mode": "none"}, "score": score, "timings": timings,
            "budget": _neural_budget(loaded.model, seq_len, std.tokens, stride),
            "source": str(loaded.path), "source_kind": loaded.kind, "data_dir": str(data), "tokenizer": str(tok),
            "world_size": env.world, "device": str(env.device),
            "bytes_from": "tokenizer" if token_bytes is None else "byte files",
        }
        if env.rank == 0:
            written = _write_outputs(result, out, per_token, nll_logp)
            if show is not None:
                show(result, written)
        return result
    finally:
        if owned:
            from pgolf.train.distributed import teardown

            teardown(env)


def _eval_sets(cfg, sets):
    """Apply ``--set`` overrides; only the ``eval.*`` and ``ttt.*`` sections may change at evaluation."""
    from pgolf.config import apply_sets

    for item in sets or []:
        if not item.strip().startswith(("eval.", "ttt.")):
            raise ConfigError(f"--set {item!r}: pgolf eval accepts only eval.* and ttt.* keys")
    return apply_sets(cfg, sets)


def _check_ttt(mode, ttt_cfg) -> None:
    """Fail before any evaluation when the TTT mode or settings are unusable."""
    if mode not in TTT_MODES:
        raise ConfigError(f"unknown TTT mode {mode!r}; choose one of {', '.join(TTT_MODES)}")
    if mode != "none":
        from pgolf import features

        features.load("ttt.mode", mode).check_config(ttt_cfg)


def _neural_budget(model, seq_len, n_targets, stride) -> dict:
    """Projected 8xH100 time of the standard and sliding passes (an estimate; see pgolf.eval.timing,
    which train_gpt.py does not carry: there the block says so)."""
    from pgolf import features

    timing = features.optional("pgolf.eval.timing")
    if timing is None:
        return {"estimate": None, "note": "not computed in train_gpt.py"}
    out = {"standard": timing.projection(model, seq_len, n_targets)}
    if stride:
        out["sliding"] = timing.projection(model, seq_len, n_targets * seq_len // stride)
    return out


def _write_outputs(result, out, per_token, nll_logp) -> list[Path]:
    """eval.json and (``per_token``) the headline's per-target NLL, both atomically; their paths."""
    from pgolf.fileio import atomic_write_json

    written = []
    if per_token is not None:
        if nll_logp is None:
            raise PgolfError(f"--per-token: the headline score {result['score']['method']!r} has no per-token values")
        _save_npy(Path(per_token), -nll_logp.astype("float64"))
        written.append(per_token)
    atomic_write_json(Path(out), result)
    return written + [out]


def _save_npy(path: Path, arr) -> None:
    """``arr`` as a .npy file (no pickle), written atomically."""
    import io

    import numpy as np

    from pgolf.fileio import atomic_write_bytes

    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())
