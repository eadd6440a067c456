"""Document-batched score-first LoRA TTT, as record #1855 runs it (``lora`` and ``phased``).

Documents (the harness's units: the targets after a BOS up to the next BOS) are sorted
by length, longest first, and taken ``doc_batch`` at a time (within each phase, for
``phased``). Each row of a batch is one document with its own context: chunk k of a
document is scored with a window of that document's tokens only, up to ``seq_len``
back; the window's start depends on the chunk's start, never on where the document
ends; rows are right-padded to the widest window of the step. LoRA is a batched
low-rank side path (:class:`BatchedLora`): every adapted Linear adds
``x A_b^T B_b^T`` for row b, with factors reset per document (A random, seeded by the
document's start position as :class:`pgolf.eval.ttt.LoraTTT` seeds it; B zero).

One forward with grad per chunk step: the driver (:func:`run_documents`) fixes the
chunk's scores from those logits (log-softmax over the vocabulary, gathered at the
targets) before the targets reach the method; then the method takes one AdamW step on
the sum over rows of each row's mean loss, so each document's update is its own.
Between phases, ``phased`` runs one global SGD epoch on the scored prefix (as
:class:`pgolf.eval.ttt.PhasedTTT`). The driver probes sampled calls
(:mod:`pgolf.eval.probes`: later inputs, other rows, purity of ``logits``).

    method = BatchedLora(model, cfg.ttt, seq_len)
    res = run_documents(method, stream, vocab, seq_len, chunk=48, doc_batch=64)
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F

from pgolf.eval.guard import method_call, plain_tensor
from pgolf.eval.reveal import RevealedView
from pgolf.eval.stream import StreamResult, units_of
from pgolf.eval.ttt_common import GlobalSGD, lora_modules


class BatchedLora:
    """Per-document LoRA factors for a batch of documents, applied through forward hooks."""

    name = "ttt-lora-batched"

    def __init__(self, model, cfg, seq_len: int, bos_id: int = 1, autocast: bool = False, phased: bool = False):
        self.model, self.cfg, self.seq_len, self.autocast = model, cfg, seq_len, autocast
        self.targets = {n.removeprefix("model."): m for n, m in lora_modules(model, cfg.lora_targets).items()}
        self.head = "head" in cfg.lora_targets
        self.factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.opt = None
        self.trained_tokens = 0
        self.sgd = GlobalSGD(model, cfg, seq_len, bos_id, autocast) if phased else None
        self._on = False  # the side paths act only inside logits(), never in the global SGD epoch
        model.requires_grad_(False)

    def _shapes(self) -> dict[str, tuple[int, int]]:
        shapes = {name: (m.out_features, m.in_features) for name, m in self.targets.items()}
        if self.head:
            shapes["head"] = tuple(self._head_weight().shape)
        return shapes

    def _head_weight(self):
        return (self.model.lm_head if self.model.lm_head is not None else self.model.tok_emb).effective_weight()

    def start(self, doc_starts: list[int]) -> None:
        """Fresh factors for documents starting at ``doc_starts`` (row order) and a fresh AdamW."""
        dev = next(self.model.parameters()).device
        r, shapes = int(self.cfg.lora_rank), self._shapes()
        per_doc = []
        for s in doc_starts:
            g = torch.Generator().manual_seed(int(s))
            per_doc.append({n: torch.randn(r, i, generator=g) / math.sqrt(i) for n, (_, i) in shapes.items()})
        self.factors = {n: (torch.stack([d[n] for d in per_doc]).to(dev).requires_grad_(True),
                            torch.zeros(len(doc_starts), o, r, device=dev, requires_grad=True))
                        for n, (o, _) in shapes.items()}
        params = [p for ab in self.factors.values() for p in ab]
        fast = {"fused": True} if dev.type == "cuda" else {"foreach": True}  # one step for all factors, not a loop
        self.opt = torch.optim.AdamW(params, lr=self.cfg.lora_lr, betas=(self.cfg.lora_beta1, self.cfg.lora_beta2),
                                     weight_decay=self.cfg.lora_weight_decay, **fast)

    def _side(self, name: str, x, out):
        return out + self._delta(name, x) if self._on else out

    def _delta(self, name: str, x):
        a, b = self.factors[name]
        m = x.size(0)
        return torch.bmm(torch.bmm(x, a[:m].transpose(1, 2).to(x.dtype)), b[:m].transpose(1, 2).to(x.dtype))

    @contextlib.contextmanager
    def hooks(self):
        """The side paths on the adapted Linears while the block is active (they act in logits() only)."""
        handles = [m.register_forward_hook(lambda mod, inp, out, n=n: self._side(n, inp[0], out))
                   for n, m in self.targets.items()]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def logits(self, x):
        """[m, T] -> [m, T, V] logits of the first m documents of the batch (with grad)."""
        self._on = True
        try:
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                h = self.model.hidden(x)
                z = F.linear(h, self._head_weight().to(h.dtype))
                if self.head:
                    z = z + self._delta("head", h)
        finally:
            self._on = False
        z = z.float()
        sc = self.model.softcap
        return sc * torch.tanh(z / sc) if sc > 0 else z

    def train(self, logits, targets) -> None:
        """One AdamW step on sum over rows of each row's mean loss (targets -100 where unscored)."""
        per_row = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=-100, reduction="none")
        counts = (targets >= 0).sum(1).clamp(min=1)
        loss = (per_row.sum(1) / counts).sum()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.trained_tokens += int(targets.numel())

    def end_phase(self, view) -> None:
        if self.sgd is not None:
            self.sgd.train(view.tokens(), 1, view.revealed)

    @property
    def global_tokens(self) -> int:
        return self.sgd.trained if self.sgd is not None else 0


def doc_batches(units, lo: int, hi: int, doc_batch: int) -> list[list[int]]:
    """Unit indices lo..hi-1 sorted by length (longest first; ties in stream order), in batches."""
    order = sorted(range(lo, hi), key=lambda u: (-(units[u][1] - units[u][0]), u))
    return [order[i: i + doc_batch] for i in range(0, len(order), doc_batch)]


def _step_inputs(stream, units, docs, k: int, chunk: int, seq_len: int):
    """(inputs [m, width], rows' (output offset, n targets, first target)) for chunk k of each document."""
    rows = []
    for u in docs:
        s, e = units[u]
        a = s + k * chunk
        if a >= e:
            break  # documents are sorted longest first: the rest are done too
        b = min(a + chunk, e)
        lo = max(s - 1, a + chunk - 1 - seq_len)
        rows.append((lo, a, b))
    width = max(b - 1 - lo for lo, _, b in rows)
    x = torch.zeros(len(rows), width, dtype=torch.long)
    for i, (lo, a, b) in enumerate(rows):
        x[i, : b - 1 - lo] = torch.from_numpy(stream[lo: b - 1].astype(np.int64))
    return x, [(a - 1 - lo, b - a, a) for lo, a, b in rows]


def run_documents(method: BatchedLora, stream, vocab_size: int, seq_len: int, chunk: int, doc_batch: int = 64,
                  phase_docs=(), device=None, bos_id: int = 1, probe_every: int = 16, seed: int | None = None,
                  progress: bool = False, desc: str = "ttt") -> StreamResult:
    """Score every target of ``stream`` with document-batched LoRA TTT (module docstring)."""
    from pgolf.collectives import rank_world, sum_array
    from pgolf.data.progress import progress as bar_of
    from pgolf.eval.isolate import remote_state
    from pgolf.eval.probes import ProbeSchedule, probed_logits

    stream, device = np.asarray(stream), torch.device(device or "cpu")
    units = units_of(stream, bos_id)
    ends = sorted({min(int(d), len(units)) for d in phase_docs if int(d) > 0} | {len(units)})
    rank, world = rank_world()
    sched, n = ProbeSchedule(probe_every, seed), len(stream) - 1
    logp, ent = np.zeros(n, np.float64), np.zeros(n, np.float32)
    calls = fwd = probes = 0
    with contextlib.ExitStack() as stack:
        with method_call("hooks"):
            stack.enter_context(method.hooks())
        bar = stack.enter_context(bar_of(total=n, desc=desc, unit="tok", enabled=progress and rank == 0))
        for p0, p1 in zip([0] + ends[:-1], ends):
            for bi, docs in enumerate(doc_batches(units, p0, p1, doc_batch)):
                if bi % world != rank:
                    continue
                with method_call("start"):
                    method.start([units[u][0] for u in docs])
                steps = math.ceil((units[docs[0]][1] - units[docs[0]][0]) / chunk)
                for k in range(steps):
                    x, rows = _step_inputs(stream, units, docs, k, chunk, seq_len)
                    x = x.to(device)
                    ranges = [(off, m) for off, m, _ in rows]
                    due = sched.due()
                    with method_call("logits"):
                        out = probed_logits(method, x, ranges, vocab_size, sched.rng, remote_state(method)) if due \
                            else method.logits(x)
                    out = plain_tensor(out, "logits")
                    calls, fwd, probes = calls + 1, fwd + x.numel() * (3 if due else 1), probes + due
                    targets = _fix_scores(out, stream, rows, logp, ent)  # scores fixed: now the targets
                    with method_call("train"):
                        method.train(out, targets.to(device))
                    bar.update(sum(m for _, m, _ in rows))
            if p1 < len(units):
                upto = units[p1][0]
                view = RevealedView(stream[:upto].copy(), upto)
                with method_call("end_phase"):
                    method.end_phase(view)
    if world > 1:
        logp, ent = sum_array(logp), sum_array(ent)
        fwd = int(sum_array(np.array([fwd], np.int64))[0])
    return StreamResult(logp=logp, entropy=ent, chunks=calls, probes=probes, units=len(units), forward_tokens=fwd)


def _fix_scores(out, stream, rows, logp, ent):
    """Record each row's scores from the logits (detached); returns the training targets."""
    lsm = torch.log_softmax(out.detach().float(), dim=-1)
    targets = torch.full(out.shape[:2], -100, dtype=torch.long)
    for i, (off, m, a) in enumerate(rows):
        tgt = torch.from_numpy(stream[a: a + m].astype(np.int64))
        part = lsm[i, off: off + m]
        logp[a - 1: a - 1 + m] = part.gather(-1, tgt[:, None].to(part.device)).squeeze(-1).double().cpu().numpy()
        ent[a - 1: a - 1 + m] = (-(part.exp() * part).sum(-1)).cpu().numpy()
        targets[i, off: off + m] = tgt
    return targets
