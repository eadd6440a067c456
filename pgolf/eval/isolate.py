"""Eval-time methods in a process of their own, which never holds an unrevealed token.

:func:`spawn_method` starts a fresh interpreter (multiprocessing's ``spawn``: nothing of
the driver's memory is inherited), builds the method there from its class and arguments
(the model's tensors cross as shared memory; the validation stream never does) and
returns a :class:`RemoteMethod` that the drivers (:func:`pgolf.eval.stream.run_stream`,
:func:`pgolf.eval.ttt_docs.run_documents`) call as they would call the method itself.
The interface is narrow: token windows in, logits out (written into a buffer the driver
owns and copied by the driver before it looks at them), revealed tokens in (each
:class:`pgolf.eval.reveal.RevealedView` crosses as the tokens revealed since the last
one; the child keeps its own copy of the prefix), the scored chunk's targets in after its
scores are fixed, and a few counters out. Whatever the method reaches in its own process
(attributes, closures, frames, the garbage collector, ctypes) holds only what it was
handed. Each call runs under the child's own guard (:mod:`pgolf.eval.guard`), and the
probes' purity fingerprint (:func:`pgolf.eval.probes.fingerprint`) is taken in the child,
where the method's state lives; a LegalityError there comes back as a LegalityError.
Under torchrun the children join a process group of their own (same ranks, a fresh port).

    with spawn_method(BatchedLora, (model, cfg.ttt, 2048), {"phased": True}, device) as m:
        res = run_documents(m, stream, vocab, 2048, chunk=48)

``PGOLF_TTT_IN_PROCESS=1`` (``pgolf eval --ttt-in-process``) runs methods in the driver's
process instead, for debugging; eval.json then says ``"isolated": false``.
"""

from __future__ import annotations

import contextlib
import os
import signal

import numpy as np
import torch

from pgolf.errors import PgolfError
from pgolf.eval.reveal import LegalityError, RevealedView

_ATTRS = {"name": "method", "independent_units": True, "batch_chunks": 0}


def in_process() -> bool:
    """Whether the user asked for methods in the driver's process (``PGOLF_TTT_IN_PROCESS=1``)."""
    return os.environ.get("PGOLF_TTT_IN_PROCESS", "") not in ("", "0")


def _wire(value, sent: list[int]):
    """What crosses to the child for one argument: tensors as arrays, views as their new tokens."""
    if isinstance(value, RevealedView):
        new = value.tokens()[sent[0]:].copy()
        sent[0] = max(sent[0], value.revealed)
        return ("view", value.revealed, new)
    if isinstance(value, torch.Tensor):
        return ("tensor", value.detach().cpu().numpy())
    return ("plain", value)


class RemoteMethod:
    """The driver's handle on a method living in a child process (module docstring)."""

    def __init__(self, cls, args, kwargs, device, dist=None):
        import torch.multiprocessing as mp  # registers the shared-memory reductions of tensors

        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        settings = {"threads": torch.get_num_threads(), "tf32": torch.backends.cuda.matmul.allow_tf32,
                    "device": str(device), "dist": dist}
        self._proc = ctx.Process(target=serve, args=(child, cls, tuple(args), dict(kwargs), settings),
                                 name="pgolf-method", daemon=True)
        self._proc.start()
        child.close()
        self._device, self._sent, self._buf, self._outs = torch.device(device), [0], None, []
        for key, value in self._recv().items():
            setattr(self, key, value)

    def _recv(self):
        try:
            kind, value = self._conn.recv()
        except (EOFError, OSError):
            self._proc.join(5)
            raise PgolfError(f"the eval method's process ended unexpectedly (exit code {self._proc.exitcode})")
        if kind == "ok":
            return value
        raise (LegalityError if kind == "legality" else PgolfError)(value)

    def _call(self, name: str, *args):
        self._conn.send((name, tuple(_wire(a, self._sent) for a in args)))
        return self._recv()

    def logits(self, x):
        """The method's logits for ``x``, copied out of the shared buffer (the child cannot touch the copy)."""
        shape = self._call("logits", x)
        if shape[0] == "need":  # the buffer is missing or too small: hand over a bigger one (once)
            self._buf = torch.empty(int(np.prod(shape[1])), dtype=torch.float32, device=self._device)
            self._conn.send(("fill", (("plain", self._buf),)))
            shape = self._recv()
        out = self._buf[: int(np.prod(shape))].view(*shape).clone()
        self._outs.append(out)
        return out

    def train(self, out, targets) -> None:
        """The method's step on the logits call that returned ``out`` (its graph is in the child)."""
        index = next((i for i, o in enumerate(self._outs) if o is out), None)
        if index is None:
            raise PgolfError("train() got logits that this method's logits() did not return")
        self._outs = []
        self._call("train", index, targets)

    def fingerprint(self) -> str:
        """The probes' digest of the method's state, taken in its own process."""
        return self._call("fingerprint")

    def begin_unit(self, view) -> None:
        self._step("begin_unit", view)

    def update(self, view, chunk, inputs) -> None:
        self._step("update", view, chunk, inputs)

    def start(self, doc_starts) -> None:
        self._step("start", list(doc_starts))

    def end_phase(self, view, *units) -> None:
        self._step("end_phase", view, *units)

    def phase_ends(self, n_units: int) -> list[int]:
        return self._call("phase_ends", n_units)

    def _step(self, name, *args) -> None:
        self._outs = []
        self._call(name, *args)

    @contextlib.contextmanager
    def hooks(self):
        self._call("hooks_on")
        try:
            yield
        finally:
            self._call("hooks_off")

    @property
    def trained_tokens(self) -> int:
        return self._call("counter", "trained_tokens")

    @property
    def global_tokens(self) -> int:
        return self._call("counter", "global_tokens")

    def close(self) -> None:
        """End the child (it also ends by itself when the driver's end of the pipe closes)."""
        if self._proc.is_alive():
            with contextlib.suppress(OSError, EOFError):
                self._conn.send(("close", ()))
            self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)
        self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def spawn_method(cls, args, kwargs, device) -> RemoteMethod:
    """A :class:`RemoteMethod` for ``cls(*args, **kwargs)``; under torchrun the children get a group."""
    from pgolf.collectives import broadcast_object, rank_world

    rank, world = rank_world()
    dist = None
    if world > 1:
        host = os.environ.get("MASTER_ADDR", "127.0.0.1")
        port = broadcast_object(_free_port(host) if rank == 0 else None)
        backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
        dist = {"backend": backend, "host": host, "port": port, "rank": rank, "world": world}
    return RemoteMethod(cls, args, kwargs, device, dist)


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class _Server:
    """The child's side: the method, its copy of the revealed prefix, and the logits it returned."""

    def __init__(self, method, device):
        self.method, self.device = method, torch.device(device)
        self.past = np.zeros(0, np.int64)
        self.outs: list = []
        self.pending = None  # logits waiting for a bigger buffer
        self.buf = None  # the driver's logits buffer (shared memory)
        self.hooks = contextlib.ExitStack()

    def arg(self, wired):
        kind, *rest = wired
        if kind == "view":
            revealed, new = rest
            start = revealed - len(new)
            if len(self.past) < revealed:
                grown = np.zeros(max(revealed, 2 * len(self.past)), new.dtype)
                grown[: len(self.past)] = self.past
                self.past = grown
            self.past[start:revealed] = new
            return RevealedView(self.past, revealed)
        if kind == "tensor":
            return torch.from_numpy(rest[0]).to(self.device)
        return rest[0]

    def handle(self, name: str, args):
        from pgolf.eval.guard import method_call

        if name == "fingerprint":
            from pgolf.eval.probes import fingerprint

            return fingerprint(self.method)
        if name == "fill":
            self.buf = args[0]
            return self._fill(self.pending)
        if name == "logits":
            with method_call("logits"):
                out = self.method.logits(args[0])
            return self._fill(out)
        with method_call(name):
            return self._method_call(name, args)

    def _method_call(self, name, args):
        m = self.method
        if name == "train":
            out, self.outs = self.outs[args[0]], []
            return m.train(out, args[1])
        if name == "counter":
            return int(getattr(m, args[0], 0))
        if name == "hooks_on":
            return self.hooks.enter_context(m.hooks())
        if name == "hooks_off":
            return self.hooks.close()
        self.outs = []
        return getattr(m, name)(*args)

    def _fill(self, out):
        if type(out) is not torch.Tensor:
            raise LegalityError(f"method logits() returned a {type(out).__name__}, not a plain torch.Tensor")
        buf = self.buf
        if buf is None or buf.numel() < out.numel():
            self.pending = out
            return ("need", tuple(out.shape))
        self.pending = None
        buf[: out.numel()].copy_(out.detach().reshape(-1))
        if buf.device.type == "cuda":
            torch.cuda.synchronize(buf.device)
        self.outs.append(out)
        return tuple(out.shape)


def _reply(conn, server, name, wired) -> None:
    try:
        value = server.handle(name, [server.arg(w) for w in wired])
        conn.send(("ok", None if name.startswith("hooks") else value))
    except LegalityError as e:
        conn.send(("legality", str(e)))
    except PgolfError as e:
        conn.send(("error", str(e)))
    except Exception as e:  # one line for the driver; the child keeps serving
        conn.send(("error", f"the eval method failed: {type(e).__name__}: {e}"))


def serve(conn, cls, args, kwargs, settings) -> None:
    """The child's loop: build the method, then answer the driver's calls until it closes."""
    from pgolf.eval.guard import method_call

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    torch.set_num_threads(settings["threads"])
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = settings["tf32"]
    device = torch.device(settings["device"])
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist = settings["dist"]
    if dist:
        import torch.distributed as td

        from datetime import timedelta

        # an explicit store: torchrun's TORCHELASTIC_USE_AGENT_STORE would make rank 0 a client of a store nobody runs
        store = td.TCPStore(dist["host"], dist["port"], dist["world"], is_master=dist["rank"] == 0,
                            timeout=timedelta(seconds=300))
        td.init_process_group(dist["backend"], store=store, rank=dist["rank"], world_size=dist["world"])
    try:
        with method_call("__init__"):
            method = cls(*args, **kwargs)
        conn.send(("ok", {k: getattr(method, k, default) for k, default in _ATTRS.items()}))
    except LegalityError as e:
        return conn.send(("legality", str(e)))
    except Exception as e:
        return conn.send(("error", f"the eval method could not be built: {type(e).__name__}: {e}"))
    server = _Server(method, device)
    try:
        while True:
            try:
                name, wired = conn.recv()
            except (EOFError, OSError):
                return
            if name == "close":
                return
            _reply(conn, server, name, wired)
    finally:
        if dist:
            import torch.distributed as td

            td.destroy_process_group()


def remote_state(method):
    """The probes' state digest for ``method``: taken in its process if it has one, else None
    (the probes then fingerprint the in-process object themselves)."""
    return method.fingerprint if isinstance(method, RemoteMethod) else None
