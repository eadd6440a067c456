"""Run-time legality probes of the causal harness (:mod:`pgolf.eval.stream`), on sampled calls.

The driver probes the first :data:`FIRST_CALLS` scoring calls of a pass and then each
later call with probability ``1 / probe_every`` (default :data:`DEFAULT_PROBE_EVERY`),
drawn from a generator seeded by ``os.urandom``, so a method cannot tell which calls are
probed. A probed call runs three forwards in random order, and the real one is
indistinguishable by position from the others:

* *real*: the inputs as they are (its logits are the ones scored);
* *future*: every row's inputs from a column ``j`` inside a random row's scored range
  replaced by random tokens; every row's outputs before ``j`` must be unchanged;
* *other rows*: every row but a random row ``i`` replaced by random tokens; row ``i``'s
  outputs must be unchanged (a row must not read another row of its batch).

Around every one of the three, a fingerprint of the method's reachable state (tensors'
identity and version counters, numpy arrays' bytes, plain values; :func:`fingerprint`)
must not move: ``logits`` is pure, so a method cannot train inside it and skip that on
a probe. Outputs are compared bit for bit on CPU and to 1e-4 elsewhere. Any violation
raises :class:`pgolf.eval.reveal.LegalityError`.

What this cannot see: state outside the method's object graph (module globals, other
objects it reaches through Python frames or the garbage collector), and a method that
behaves honestly on every probed call and cheats on the others only by luck of the
draw (each unprobed call is probed with probability ``1 / probe_every``).

    sched = ProbeSchedule(probe_every=16)
    if sched.due(): logits = probed_logits(method, x, rows, sched.rng)
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from pgolf.eval.reveal import LegalityError

FIRST_CALLS = 8  # every pass probes its first calls
DEFAULT_PROBE_EVERY = 16  # then each later call with probability 1/16
_MAX_NODES = 200_000  # fingerprint walk bound (objects visited)


class ProbeSchedule:
    """Which scoring calls are probed: the first FIRST_CALLS, then each with p = 1/probe_every."""

    def __init__(self, probe_every: int = DEFAULT_PROBE_EVERY, seed: int | None = None):
        self.every = int(probe_every)
        self.rng = np.random.default_rng(seed if seed is not None else int.from_bytes(os.urandom(8), "little"))
        self.calls = 0

    def due(self) -> bool:
        self.calls += 1
        if self.every <= 0:
            return False
        return self.every == 1 or self.calls <= FIRST_CALLS or self.rng.random() < 1.0 / self.every


def fingerprint(obj) -> str:
    """A digest of the state reachable from ``obj`` (attributes, containers, modules, optimizers)."""
    import torch

    h, seen, todo = hashlib.sha256(), set(), [obj]
    while todo and len(seen) < _MAX_NODES:
        o = todo.pop()
        key = id(o)  # once per node: every id() is an audit event the guard's hook sees
        if key in seen:
            continue
        seen.add(key)
        if isinstance(o, torch.Tensor):
            h.update(repr((key, _version(o), tuple(o.shape), str(o.dtype), o.device.type)).encode())
        elif isinstance(o, np.ndarray):
            h.update(repr((key, o.shape, str(o.dtype))).encode() + hashlib.sha256(o.tobytes()).digest())
        elif isinstance(o, (int, float, str, bytes, bool, type(None))):
            h.update(repr(o).encode())
        elif isinstance(o, dict):
            h.update(f"dict{len(o)}".encode())
            for k, v in o.items():
                todo += [k, v]
        elif isinstance(o, (list, tuple, set, frozenset)):
            h.update(f"{type(o).__name__}{len(o)}".encode())
            todo += list(o)
        elif hasattr(o, "__dict__") and not callable(o) or isinstance(o, torch.nn.Module):
            h.update(type(o).__qualname__.encode())
            todo.append(vars(o))
    return h.hexdigest()


def _version(t) -> int:
    try:
        return int(t._version)
    except (RuntimeError, AttributeError):  # inference tensors have no version counter
        return -1


def _tokens(shape, vocab: int, rng, device):
    import torch

    g = torch.Generator().manual_seed(int(rng.integers(2**62)))
    return torch.randint(0, vocab, tuple(shape), generator=g).to(device)


def probed_logits(method, x, ranges, vocab: int, rng, state=None):
    """The method's logits for ``x`` after the three probes pass; ``ranges``: (lo, n) per real row.

    ``state()`` digests the method's state (default :func:`fingerprint` of ``method``; a
    method in its own process is digested there, :mod:`pgolf.eval.isolate`)."""
    import torch

    i = int(rng.integers(len(ranges)))
    lo, n = ranges[i]
    j = min(int(rng.integers(lo + 1, lo + n + 1)), x.size(1) - 1)
    future = x.clone()
    if j > 0:
        future[:, j:] = (future[:, j:] + 1 + _tokens(future[:, j:].shape, vocab - 1, rng, x.device)) % vocab
    rows = _tokens(x.shape, vocab, rng, x.device)
    rows[i] = x[i]
    calls = {"real": x, "future": future, "rows": rows}
    order = list(calls)
    rng.shuffle(order)
    digest, out = state or (lambda: fingerprint(method)), {}
    for name in order:
        before = digest()
        out[name] = method.logits(calls[name])
        if digest() != before:
            raise LegalityError(f"method {method.name}: its state changed inside logits() (scoring must be pure; "
                                "updates belong in update(), after the chunk is revealed)")
    real = out["real"].detach().float()
    if j > 0 and not _same(real[:, :j], out["future"][:, :j]):
        raise LegalityError(f"method {method.name}: outputs before input column {j} changed when the later "
                            "inputs were replaced (it looks ahead)")
    if x.size(0) > 1 and not _same(real[i], out["rows"][i]):
        raise LegalityError(f"method {method.name}: row {i}'s outputs changed when the other rows of its batch "
                            "were replaced (a row reads another row)")
    return out["real"]


def _same(a, b) -> bool:
    import torch

    b = b.detach().float()
    return torch.equal(a, b) if a.device.type == "cpu" else torch.allclose(a, b, rtol=1e-4, atol=1e-4)
