"""Score-first test-time training (TTT) as methods of the causal harness (:mod:`pgolf.eval.stream`).

Three modes, each a :class:`pgolf.eval.stream.StreamMethod` (the harness scores every
chunk before the method may train on it; see that module for why this is legal):

* ``lora`` (:class:`LoraTTT`): per-document LoRA adapters of rank ``ttt.lora_rank`` on
  the attention Q/K/V/O, MLP and head matrices (``ttt.lora_targets``), reset at each
  document start (a unit of the harness). Each chunk of ``ttt.chunk_tokens`` targets
  is scored, then trained on with one AdamW step (``lora_lr``, betas, decoupled weight
  decay). The base weights never change, so documents can be dealt to ranks.
* ``global`` (:class:`GlobalTTT`): SGD with momentum on the base weights over the
  chunks already scored, one step per ``ttt.global_chunk_tokens`` revealed tokens (one
  epoch), on sequences that never cross a document start.
* ``phased`` (:class:`PhasedTTT`): record #1855's scheme: cumulative phases ending at
  document counts ``ttt.phase_docs``; per-document LoRA inside each phase and, between
  phases, one global SGD epoch on the whole scored prefix.

Loaded through :mod:`pgolf.features` only when ``ttt.mode`` is one of these three, so a
train_gpt.py without TTT does not carry it.

    method = make_method("phased", model, cfg.ttt, seq_len=2048)
    res = run_stream(method, stream, vocab, seq_len=2048, chunk=cfg.ttt.chunk_tokens)

``method.trained_tokens`` counts tokens through forward+backward (for the time budget).
:func:`run_ttt` is the TTT pass of ``pgolf eval`` (:mod:`pgolf.eval.harness` reaches this
module through :mod:`pgolf.features` only when ``ttt.mode`` is not ``none``): one
harness pass, then eval.json's ``ttt`` block and the per-target arrays the n-gram mixes.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pgolf.errors import ConfigError
from pgolf.eval.stream import ModelMethod, StreamMethod
from pgolf.eval.ttt_common import GlobalSGD as _GlobalSGD
from pgolf.eval.ttt_common import doc_sequences  # noqa: F401  (part of this module's interface)
from pgolf.eval.ttt_common import lora_modules as _lora_modules

MODES = ("none", "lora", "global", "phased")
LORA_TARGETS = ("q", "k", "v", "o", "mlp", "head")


class _Hidden(nn.Module):
    """``model.hidden`` as a module's forward, so torch.func.functional_call can swap weights."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, idx):
        return self.model.hidden(idx)


def _head_logits(model, x, head_delta=None):
    """The GPT's tied/untied head and softcap on hidden states ``x`` (plus an optional weight delta)."""
    w = (model.lm_head if model.lm_head is not None else model.tok_emb).effective_weight()
    if head_delta is not None:
        w = w + head_delta
    logits = F.linear(x, w.to(x.dtype)).float()
    return model.softcap * torch.tanh(logits / model.softcap) if model.softcap > 0 else logits


class LoraTTT(ModelMethod):
    """Per-document LoRA adapters trained on each chunk after it is scored (module docstring)."""

    name = "ttt-lora"
    independent_units = True
    batch_chunks = 1

    def __init__(self, model, cfg, seq_len: int, bos_id: int = 1, autocast: bool = False):
        super().__init__(model, autocast)
        check_config(cfg)
        self.cfg, self.seq_len, self.bos_id = cfg, seq_len, bos_id
        self.wrapper = _Hidden(model)
        self.targets = _lora_modules(model, cfg.lora_targets)
        self.head = "head" in cfg.lora_targets
        self.adapters: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.opt = None
        self.trained_tokens = 0
        model.requires_grad_(False)

    def _shapes(self):
        shapes = {name: (m.out_features, m.in_features) for name, m in self.targets.items()}
        if self.head:
            w = (self.model.lm_head if self.model.lm_head is not None else self.model.tok_emb).weight
            shapes["head"] = tuple(w.shape)
        return shapes

    def begin_unit(self, view) -> None:
        """Fresh adapters (A random, seeded by the document's position; B zero) and optimizer."""
        g = torch.Generator().manual_seed(int(view.revealed))
        dev = next(self.model.parameters()).device
        r = int(self.cfg.lora_rank)
        self.adapters = {}
        for name, (out_f, in_f) in self._shapes().items():
            a = (torch.randn(r, in_f, generator=g) / math.sqrt(in_f)).to(dev).requires_grad_(True)
            b = torch.zeros(out_f, r, device=dev, requires_grad=True)
            self.adapters[name] = (a, b)
        params = [p for ab in self.adapters.values() for p in ab]
        self.opt = torch.optim.AdamW(params, lr=self.cfg.lora_lr, betas=(self.cfg.lora_beta1, self.cfg.lora_beta2),
                                     weight_decay=self.cfg.lora_weight_decay)

    def _forward(self, inputs):
        deltas = {name: b @ a for name, (a, b) in self.adapters.items()}
        head = deltas.pop("head", None)
        params = {name: self.targets[name].weight + d for name, d in deltas.items()}
        with torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            x = torch.func.functional_call(self.wrapper, params, (inputs,))
            return _head_logits(self.model, x, head)

    def logits(self, inputs):
        with torch.no_grad():
            return self._forward(inputs)

    def update(self, view, chunk, inputs) -> None:
        """One AdamW step on the chunk's (now revealed) targets, read through the view."""
        width = inputs.size(1)
        lo = chunk.end - 1 - width  # stream position of inputs[:, 0]
        tgt = torch.from_numpy(view[chunk.start: chunk.end].astype(np.int64)).to(inputs.device)
        logits = self._forward(inputs)[0, chunk.start - 1 - lo:]
        loss = F.cross_entropy(logits.float(), tgt)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.trained_tokens += width


class GlobalTTT(ModelMethod):
    """SGD on the base weights over scored chunks, every ``global_chunk_tokens`` (module docstring)."""

    name = "ttt-global"
    independent_units = False  # the weights carry over between documents: replicated on every rank

    def __init__(self, model, cfg, seq_len: int, bos_id: int = 1, autocast: bool = False):
        super().__init__(model, autocast)
        self.sgd = _GlobalSGD(model, cfg, seq_len, bos_id, autocast)
        self.done = 1  # first target not yet trained on
        model.requires_grad_(False)

    @property
    def trained_tokens(self) -> int:
        return self.sgd.trained

    def update(self, view, chunk, inputs) -> None:
        if chunk.end - self.done >= self.sgd.cfg.global_chunk_tokens:
            self.sgd.train(view.tokens(), self.done, chunk.end)
            self.done = chunk.end


class PhasedTTT(LoraTTT):
    """Per-document LoRA within phases; a global SGD epoch on the scored prefix between phases."""

    name = "ttt-phased"

    def __init__(self, model, cfg, seq_len: int, bos_id: int = 1, autocast: bool = False):
        super().__init__(model, cfg, seq_len, bos_id, autocast)
        self.sgd = _GlobalSGD(model, cfg, seq_len, bos_id, autocast)

    def phase_ends(self, n_units: int) -> list[int]:
        return [int(d) for d in self.cfg.phase_docs]

    def end_phase(self, view, units: int) -> None:
        self.sgd.train(view.tokens(), 1, view.revealed)

    @property
    def global_tokens(self) -> int:
        return self.sgd.trained


def check_config(cfg) -> None:
    """Raise ConfigError (one line) for TTT settings no mode can run with."""
    bad = sorted(set(cfg.lora_targets) - set(LORA_TARGETS))
    if bad:
        raise ConfigError(f"ttt.lora_targets {bad} unknown; choose among {', '.join(LORA_TARGETS)}")
    for key in ("lora_rank", "chunk_tokens", "global_chunk_tokens"):
        if int(getattr(cfg, key)) < 1:
            raise ConfigError(f"ttt.{key} must be >= 1, got {getattr(cfg, key)}")
    if cfg.lora_lr <= 0 or cfg.global_lr <= 0 or not (0 <= cfg.lora_beta1 < 1 and 0 <= cfg.lora_beta2 < 1):
        raise ConfigError("ttt learning rates must be > 0 and the LoRA betas in [0, 1)")
    if list(cfg.phase_docs) != sorted(set(cfg.phase_docs)) or any(d < 1 for d in cfg.phase_docs):
        raise ConfigError(f"ttt.phase_docs must be increasing document counts >= 1, got {list(cfg.phase_docs)}")


def make_method(mode: str, model, cfg, seq_len: int, bos_id: int = 1, autocast: bool = False) -> StreamMethod:
    """The one-document-at-a-time reference method of a mode, for :func:`pgolf.eval.stream.run_stream`
    (``none``: the frozen model); what ``pgolf eval`` runs is :func:`build_method`."""
    if mode not in MODES:
        raise ConfigError(f"unknown TTT mode {mode!r}; choose one of {', '.join(MODES)}")
    if mode == "none":
        return ModelMethod(model, autocast)
    cls = {"lora": LoraTTT, "global": GlobalTTT, "phased": PhasedTTT}[mode]
    return cls(model, cfg, seq_len, bos_id, autocast)


def _method_class(mode: str):
    """(class, extra keyword arguments) that builds a mode's method."""
    if mode in ("lora", "phased"):  # the record's way: documents side by side (pgolf.eval.ttt_docs)
        from pgolf.eval.ttt_docs import BatchedLora

        return BatchedLora, {"phased": mode == "phased"}
    if mode not in MODES or mode == "none":
        raise ConfigError(f"unknown TTT mode {mode!r}; choose one of {', '.join(MODES[1:])}")
    return {"global": GlobalTTT}[mode], {}


def build_method(mode, model, cfg, seq_len, bos_id, autocast, device):
    """The method ``pgolf eval`` runs for a mode (lora/phased: :class:`pgolf.eval.ttt_docs.BatchedLora`),
    in a process of its own (pgolf.eval.isolate) unless PGOLF_TTT_IN_PROCESS is set; ``close()`` a
    :class:`pgolf.eval.isolate.RemoteMethod` when done."""
    from pgolf.eval.guard import method_call
    from pgolf.eval.isolate import in_process, spawn_method

    cls, kwargs = _method_class(mode)
    args = (model, cfg.ttt, seq_len, bos_id, autocast)
    if not in_process():
        return spawn_method(cls, args, kwargs, device)
    with method_call("__init__"):  # the stream is in the caller's frame: the method is built under the guard
        return cls(*args, **kwargs)


def run_ttt(mode, model, tokens, target_bytes_of, seq_len, batch_seqs, cfg, env, progress,
            timings) -> tuple[dict, dict]:
    """The TTT block and its per-target arrays, from one pass of the causal harness."""
    from pgolf.model.bpb import val_stream

    stream = val_stream(np.asarray(tokens), seq_len)
    t0 = time.perf_counter()
    res, trained, isolated = run_method(mode, model, stream, cfg, seq_len, batch_seqs, env.device, progress)
    timings["ttt_s"] = time.perf_counter() - t0
    return _block(mode, model, stream, res, trained, target_bytes_of, cfg, seq_len, isolated)


def run_method(mode, model, stream, cfg, seq_len, batch_seqs, device, progress=False):
    """One pass of a mode's method over ``stream`` as ``pgolf eval`` runs it (:func:`build_method`,
    the causal driver, the method's end): (result, trained tokens, whether it ran isolated)."""
    from pgolf.data.tokenizer import BOS_ID
    from pgolf.eval.guard import method_call
    from pgolf.eval.isolate import RemoteMethod

    method = build_method(mode, model, cfg, seq_len, BOS_ID, device.type == "cuda", device)
    try:
        res = _run(mode, method, stream, cfg, seq_len, batch_seqs, device, progress)
        with method_call("trained_tokens"):
            trained = int(method.trained_tokens) + int(getattr(method, "global_tokens", 0))
    finally:
        if isinstance(method, RemoteMethod):
            method.close()
    return res, trained, isinstance(method, RemoteMethod)


def _run(mode, method, stream, cfg, seq_len, batch_seqs, device, progress):
    from pgolf.data.tokenizer import BOS_ID

    chunk = min(int(cfg.ttt.chunk_tokens), seq_len)
    common = {"device": device, "bos_id": BOS_ID, "progress": progress, "desc": f"ttt {mode}"}
    if mode in ("lora", "phased"):
        from pgolf.eval.ttt_docs import run_documents

        return run_documents(method, stream, cfg.model.vocab_size, seq_len, chunk, doc_batch=batch_seqs,
                             phase_docs=cfg.ttt.phase_docs if mode == "phased" else (), **common)
    from pgolf.eval.stream import run_stream

    return run_stream(method, stream, cfg.model.vocab_size, seq_len, chunk, batch=batch_seqs, **common)


def _block(mode, model, stream, res, trained, target_bytes_of, cfg, seq_len, isolated) -> tuple[dict, dict]:
    from pgolf.eval.timing import projection

    chunk = min(int(cfg.ttt.chunk_tokens), seq_len)
    target_bytes = target_bytes_of(stream)
    nats, n = -float(np.sum(res.logp)), len(stream) - 1
    block = {"mode": mode, "valid": True, "isolated": isolated, "val_loss": nats / n,
             "forward_tokens_per_target": res.forward_tokens / n,
             "val_bpb": nats / math.log(2) / float(target_bytes.sum()), "chunk_tokens": chunk,
             "documents": res.units, "chunks": res.chunks, "causality_probes": res.probes,
             "settings": dataclasses.asdict(cfg.ttt),
             "budget": projection(model, seq_len, res.forward_tokens, trained, steps=res.chunks)}
    return block, {"logp": res.logp, "entropy": res.entropy, "bytes": target_bytes}
