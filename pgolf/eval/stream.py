"""The causal evaluation harness: one driver owns the validation stream; methods only see the past.

Every eval-time method that predicts with a causal model (the frozen neural model of a
sliding-window evaluation, and each test-time-training mode of :mod:`pgolf.eval.ttt`)
runs inside :func:`run_stream`, which makes the challenge's four conditions hold by
construction rather than by each method's discipline:

1. *Causal.* The harness keeps its own buffer of revealed tokens and hands methods only
   :class:`RevealedView` objects over it; reading a position that has not been scored
   raises :class:`LegalityError` (both in :mod:`pgolf.eval.reveal`). Unrevealed tokens
   are not in that buffer at all.
2. *Normalized.* A method returns logits; the harness itself takes the log-softmax over
   the whole vocabulary and gathers the target, so every score is a normalized
   distribution. (The causal n-gram mixture, which returns target log-probs, is audited
   separately by :mod:`pgolf.eval.mixture`.)
3. *Score before update.* For each chunk the harness builds the input window itself
   (tokens before the chunk's last target only), fixes the chunk's scores, reveals the
   chunk, and only then calls ``method.update``.
4. *One left-to-right pass.* Chunks are visited once, in stream order (units dealt to
   ranks are each processed left to right; see below).

Inside a chunk, teacher forcing gives the model the chunk's earlier tokens as inputs;
that the output at position p ignores inputs >= p is the model's causal mask. The
harness checks it at run time on sampled calls (:mod:`pgolf.eval.probes`: the first 8
calls, then each with probability ``1/probe_every``, unpredictable to the method):
replacing the inputs from a column inside a scored range on, or every other row of the
batch, must leave the earlier outputs (the row's outputs) unchanged, and ``logits`` must
not change the method's state; a violation raises :class:`LegalityError`.

The stream's targets (positions ``1..n-1``) are split into *units*: a unit starts just
after a BOS token (or at position 1) and ends with the next BOS, so a method learns that
a document began only from a token it has already scored. Within a unit, chunks of
``chunk`` targets are scored with a window of the last ``seq_len`` tokens; methods never
learn where a chunk ends before it is scored (the window always ends at the chunk's last
input). A method with ``independent_units`` (state reset at each unit, base weights
fixed) may have its units dealt round-robin to torch.distributed ranks; per-token
arrays are then summed across ranks, which gives the same numbers as one process.
Methods that learn across units (global SGD) run replicated on every rank.

    res = run_stream(method, stream, vocab_size, seq_len=256, chunk=64)
    res.logp  # float64 log-prob of each target stream[1:], scored before it was seen
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pgolf.collectives import rank_world, sum_array
from pgolf.errors import PgolfError
from pgolf.eval.guard import method_call, plain_tensor
from pgolf.eval.reveal import LegalityError, RevealedView


@dataclass(frozen=True)
class Chunk:
    """Targets ``start..end-1`` (stream positions) of unit ``unit``, scored together."""

    start: int
    end: int
    unit: int


class StreamMethod:
    """Base of every method the harness runs; the defaults describe a frozen model.

    ``logits(inputs)`` must be pure (no state change): [B, T] token ids -> [B, T, V].
    ``begin_unit(view)`` is called when a unit (document) starts at ``view.revealed``;
    ``update(view, chunk, inputs)`` after the chunk is revealed (``inputs`` is the
    window the chunk was scored with); ``end_phase(view, units)`` at each phase boundary
    but the last (after ``units`` units; see :meth:`phase_ends`). A method whose
    updates must each precede the next chunk's scoring sets ``batch_chunks = 1``;
    otherwise up to the harness's ``batch`` chunks of a unit are scored together, then
    revealed, then updated in order (legal either way: nothing is updated before it is
    scored).
    """

    name = "neural"
    independent_units = True  # state depends only on the current unit: units may be dealt to ranks
    batch_chunks = 0  # chunks scored per forward before their updates (0: the harness's batch)
    trained_tokens = 0  # tokens this method has run forward+backward on

    def logits(self, inputs):
        raise NotImplementedError

    def begin_unit(self, view: RevealedView) -> None:
        pass

    def update(self, view: RevealedView, chunk: Chunk, inputs) -> None:
        pass

    def phase_ends(self, n_units: int) -> list[int]:
        """Unit counts after which ``end_phase`` runs (the last one is always ``n_units``)."""
        return [n_units]

    def end_phase(self, view: RevealedView, units: int) -> None:
        pass


class ModelMethod(StreamMethod):
    """A frozen model: the sliding-window evaluation as a harness method."""

    def __init__(self, model, autocast: bool = False):
        self.model, self.autocast = model, autocast

    def logits(self, inputs):
        import torch

        with torch.no_grad(), torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            return self.model.forward_logits(inputs)


@dataclass
class StreamResult:
    """Per-target arrays aligned with ``stream[1:]`` and how they were produced."""

    logp: np.ndarray  # float64 log-prob of each target
    entropy: np.ndarray  # float32 entropy of each predicted distribution (nats)
    chunks: int = 0
    probes: int = 0
    units: int = 0
    forward_tokens: int = 0  # tokens through the method's forward (probes included)


def units_of(stream: np.ndarray, bos_id: int) -> list[tuple[int, int]]:
    """Target ranges [start, end): a unit starts after each BOS (or at 1) and ends with the next BOS."""
    n = len(stream)
    cuts = [int(i) + 1 for i in np.flatnonzero(stream[1:-1] == bos_id) + 1]  # positions right after a BOS
    starts = [1] + [c for c in cuts if c > 1]
    ends = starts[1:] + [n]
    return [(a, b) for a, b in zip(starts, ends) if b > a]


def chunks_of(units: list[tuple[int, int]], chunk: int) -> list[list[Chunk]]:
    """Each unit's chunks of at most ``chunk`` targets."""
    return [[Chunk(a, min(a + chunk, b), u) for a in range(s, b, chunk)] for u, (s, b) in enumerate(units)]


class _Driver:
    """State of one pass: the revealed buffer, output arrays and the probe schedule."""

    def __init__(self, method, stream, vocab_size, seq_len, chunk, device, probe_every, seed):
        import torch

        from pgolf.eval.probes import ProbeSchedule

        self.method, self.stream, self.V, self.L, self.chunk = method, stream, vocab_size, seq_len, chunk
        self.device, self.schedule = device, ProbeSchedule(probe_every, seed)
        self.buffer = np.zeros_like(stream)  # revealed tokens only; the rest stays 0
        self.revealed = 0
        n = len(stream) - 1
        self.logp, self.entropy = np.zeros(n, np.float64), np.zeros(n, np.float32)
        self.count, self.probes, self.forward_tokens = 0, 0, 0
        self.torch = torch

    def reveal(self, upto: int) -> RevealedView:
        if upto > self.revealed:
            self.buffer[self.revealed:upto] = self.stream[self.revealed:upto]
            self.revealed = upto
        return RevealedView(self.buffer, self.revealed)

    def window(self, c: Chunk) -> tuple[np.ndarray, int]:
        """(inputs stream[lo : c.end-1], offset of the chunk's first target in the outputs).

        ``lo`` depends on the chunk's start and the nominal chunk length only, never on
        where the chunk really ends (a BOS inside it, or the stream's end, cuts it short):
        the context of a target must not tell whether a document boundary follows it."""
        lo = max(0, c.start + self.chunk - 1 - self.L)
        return self.stream[lo: c.end - 1], c.start - 1 - lo

    def score(self, batch: list[Chunk], rows: int) -> list:
        """Score chunks (none of whose tokens are revealed); returns their input tensors.

        The batch always has ``rows`` rows of ``seq_len`` inputs (short windows and
        missing rows are right/zero padded), so each row is computed with the same
        shapes whatever its neighbours are: scores are bit-identical on CPU however the
        chunks were grouped or dealt.
        """
        torch = self.torch
        wins = [self.window(c) for c in batch]
        x = torch.zeros(max(rows, len(batch)), self.L, dtype=torch.long)
        for i, (w, _) in enumerate(wins):
            x[i, : len(w)] = torch.from_numpy(w.astype(np.int64))
        x = x.to(self.device)
        if self.schedule.due():
            from pgolf.eval.isolate import remote_state
            from pgolf.eval.probes import probed_logits

            ranges = [(off, c.end - c.start) for c, (_, off) in zip(batch, wins)]
            with method_call("logits"):
                logits = probed_logits(self.method, x, ranges, self.V, self.schedule.rng, remote_state(self.method))
            self.probes += 1
            self.forward_tokens += 2 * x.numel()
        else:
            with method_call("logits"):
                logits = self.method.logits(x)
        self.forward_tokens += x.numel()
        logits = plain_tensor(logits, "logits")
        if tuple(logits.shape) != (x.size(0), self.L, self.V):
            raise LegalityError(f"method {self.method.name} returned logits of shape {tuple(logits.shape)}, "
                                f"expected {(x.size(0), self.L, self.V)}")
        self.count += 1
        inputs = []
        for i, (c, (w, lo)) in enumerate(zip(batch, wins)):
            lsm = torch.log_softmax(logits[i, lo: lo + c.end - c.start].detach().float(), dim=-1)
            tgt = torch.from_numpy(self.stream[c.start: c.end].astype(np.int64)).to(lsm.device)
            self.logp[c.start - 1: c.end - 1] = lsm.gather(-1, tgt[:, None]).squeeze(-1).double().cpu().numpy()
            self.entropy[c.start - 1: c.end - 1] = (-(lsm.exp() * lsm).sum(-1)).cpu().numpy()
            inputs.append(x[i: i + 1, : len(w)])
        return inputs


def _phases(method, units) -> list[tuple[int, int]]:
    """Consecutive unit ranges [p0, p1) ending at the method's phase boundaries (clipped)."""
    ends = sorted({min(max(int(e), 0), len(units)) for e in method.phase_ends(len(units))} | {len(units)})
    ends = [e for e in ends if e > 0]
    return list(zip([0] + ends[:-1], ends))


def run_stream(method: StreamMethod, stream: np.ndarray, vocab_size: int, seq_len: int, chunk: int,
               batch: int = 1, device=None, bos_id: int = 1, probe_every: int = 16, seed: int | None = None,
               progress: bool = False, desc: str = "stream") -> StreamResult:
    """Score every target of ``stream`` with ``method`` under the harness's rules (module docstring)."""
    import torch

    from pgolf.data.progress import progress as bar_of

    stream = np.asarray(stream)
    if len(stream) < 2 or int(stream.max()) >= vocab_size or int(stream.min()) < 0:
        raise PgolfError(f"stream needs >= 2 tokens inside the vocabulary 0..{vocab_size - 1}")
    if not 1 <= chunk <= seq_len:
        raise PgolfError(f"chunk must be between 1 and the window length {seq_len}, got {chunk}")
    device = torch.device(device or "cpu")
    drv = _Driver(method, stream, vocab_size, seq_len, chunk, device, probe_every, seed)
    units = units_of(stream, bos_id)
    plan = chunks_of(units, chunk)
    rank, world = rank_world()
    with method_call("attributes"):
        dealt = bool(method.independent_units) and world > 1
        group = max(1, int(method.batch_chunks or batch))
    with method_call("phase_ends"):
        phases = _phases(method, units)
    with bar_of(total=len(stream) - 1, desc=desc, unit="tok", enabled=progress and rank == 0) as bar:
        for p0, p1 in phases:
            mine = [c for u in range(p0, p1) if not dealt or u % world == rank for c in plan[u]]
            for i in range(0, len(mine), group):
                part = mine[i: i + group]
                for c in part:
                    if c.start == units[c.unit][0]:
                        view = drv.reveal(part[0].start)  # nothing of this group is revealed yet
                        with method_call("begin_unit"):
                            method.begin_unit(view)
                inputs = drv.score(part, group)
                view = drv.reveal(part[-1].end)
                with method_call("update"):
                    for c, x in zip(part, inputs):
                        method.update(view, c, x)
                bar.update(sum(c.end - c.start for c in part))
            if p1 < len(units):
                view = drv.reveal(units[p1][0])
                with method_call("end_phase"):
                    method.end_phase(view, p1)
    logp, ent, fwd = drv.logp, drv.entropy, drv.forward_tokens
    if dealt:
        logp, ent = sum_array(logp), sum_array(ent)  # each rank filled its own units, zeros elsewhere
        fwd = int(sum_array(np.array([fwd], np.int64))[0])
    return StreamResult(logp=logp, entropy=ent, chunks=drv.count, probes=drv.probes, units=len(units),
                        forward_tokens=fwd)

