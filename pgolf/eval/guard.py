"""Run-time tripwire around every call the evaluation drivers make into a method.

While a driver (:func:`pgolf.eval.stream.run_stream`, :func:`pgolf.eval.ttt_docs.run_documents`)
is inside a call to an eval-time method, an interpreter audit hook (PEP 578) treats the
known in-process ways of reaching objects the method was not handed as a legality
violation: taking a frame (``sys._getframe``, ``inspect.currentframe``, a traceback's,
generator's or coroutine's frame), listing threads' frames, walking the garbage
collector's object graph, installing a tracer or profiler, native memory access through
``ctypes``, and opening ``/proc/*/mem``. The violation is recorded before the hook raises,
so a method that catches the error is still failed when its call returns. Frames taken by
the standard library's own bookkeeping (``collections.namedtuple``, ``typing`` and
``typing_extensions``, ``enum``, ``logging``'s caller lookup) and by torch's compiler stack (``torch._dynamo``,
``torch._inductor``, ``torch.fx``) are allowed: a method can still reach frames through
those libraries' internals, through C extensions, or by disabling this module itself. It
is a tripwire, not isolation (README, "Legality contract"). Code that runs while a module
is being imported (lazy imports of torch's dependencies take frames at import time) is not
checked either, so a method could also hide its reach inside a module it imports.

    with method_call("logits"):
        out = method.logits(x)   # LegalityError if the method reached for the driver's state
    out = plain_tensor(out, "logits")   # no subclass that would run method code in the driver
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading

from pgolf.eval.reveal import LegalityError

FRAME_EVENTS = frozenset({"sys._getframe", "sys._current_frames", "sys.settrace", "sys.setprofile",
                          "gc.get_objects", "gc.get_referrers", "gc.get_referents"})
FRAME_ATTRS = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame"})
WATCHED = FRAME_EVENTS | {"object.__getattr__", "open"}  # plus every "ctypes.*" event
_STDLIB_OK = {"collections": ("namedtuple",), "typing": None, "enum": None}
_TORCH_OK = (os.sep + "_dynamo" + os.sep, os.sep + "_inductor" + os.sep, os.sep + "fx" + os.sep)


class _Guard:
    """The armed thread, the call it is in, and the first violation seen (sticky per call)."""

    __slots__ = ("thread", "call", "violation", "inside")

    def __init__(self):
        self.thread = None
        self.call = ""
        self.violation = None
        self.inside = False

    def check(self, event: str, args) -> None:
        """Record and raise a violation if ``event`` (one the guard watches) is one while armed."""
        if self.thread is None or self.inside:
            return
        what = _offence(event, args)
        if what is None:
            return
        if event == "sys._getframe" and threading.get_ident() != self.thread:
            return  # another thread's own stack holds none of the driver's frames
        self.inside = True
        try:
            caller = sys._getframe(2)  # 0: this method, 1: the hook, 2: the code that did ``event``
            if _importing(caller) or (event == "sys._getframe" and _allowed_caller(caller)):
                return
            where = f"{caller.f_code.co_filename}:{caller.f_lineno}"
        finally:
            self.inside = False
        self.violation = self.violation or f"method {self.call}() {what} during evaluation (at {where})"
        raise LegalityError(self.violation)


def _offence(event: str, args):
    """What the audited ``event`` does, in words, if it is one the guard refuses (else None)."""
    if event in FRAME_EVENTS:
        return f"called {event}"
    if event == "object.__getattr__" and len(args) > 1 and args[1] in FRAME_ATTRS:
        return f"read a frame through .{args[1]}"
    if event.startswith("ctypes."):
        return f"used native memory access ({event})"
    if event == "open" and args and isinstance(args[0], (str, bytes)):
        path = os.fsdecode(args[0])
        if path.startswith("/proc/") and path.endswith("/mem"):
            return f"opened {path}"
    return None


def _importing(frame) -> bool:
    """Whether ``frame`` runs inside a module import (a lazy import's module-level code)."""
    while frame is not None:
        if frame.f_code.co_filename == "<frozen importlib._bootstrap>":
            return True
        frame = frame.f_back
    return False


def _allowed_caller(caller) -> bool:
    """Whether ``caller`` (it called ``sys._getframe``) is library bookkeeping that keeps the frame."""
    path = caller.f_code.co_filename
    name = os.path.splitext(os.path.basename(path))[0]
    if os.path.basename(os.path.dirname(path)) == "collections":
        name = "collections"
    if name in _STDLIB_OK and os.path.dirname(path).startswith(os.path.dirname(os.__file__)):
        names = _STDLIB_OK[name]
        return names is None or caller.f_code.co_name in names
    if name == "typing_extensions":  # typing's backport: module names and origin checks, no frames out
        return True
    if name == "__init__" and path.endswith(os.path.join("logging", "__init__.py")):
        return caller.f_back is not None and caller.f_back.f_code.co_name == "findCaller"
    return any(part in path for part in _TORCH_OK) and (os.sep + "torch" + os.sep) in path


def _hook_of(guard: _Guard):
    """The audit hook: a plain function (a bound method costs the interpreter ~2.5x more per
    event). Most events (``builtins.id`` above all: every tensor hash) are none of the guard's
    business, so its first test is one set lookup and a prefix check."""

    def hook(event: str, args) -> None:
        if event in WATCHED or event.startswith("ctypes."):
            guard.check(event, args)

    return hook


_GUARD: list[_Guard] = []


def _guard() -> _Guard:
    """The process's guard; its audit hook is installed on first use (hooks cannot be removed)."""
    if not _GUARD:
        _GUARD.append(_Guard())
        sys.addaudithook(_hook_of(_GUARD[0]))
    return _GUARD[0]


@contextlib.contextmanager
def method_call(name: str):
    """Arm the guard for one call into a method; LegalityError afterwards if it tripped."""
    g = _guard()
    if g.thread is not None:  # a nested call (a probe inside a driver call): already armed
        yield
        return
    g.thread, g.call, g.violation = threading.get_ident(), name, None
    try:
        yield
    except LegalityError:
        raise
    except BaseException:
        if g.violation:  # the method turned the guard's error into another one
            raise LegalityError(g.violation) from None
        raise
    finally:
        g.thread = None
    if g.violation:  # the method caught the guard's error
        raise LegalityError(g.violation)


def plain_tensor(value, call: str):
    """``value`` if it is exactly a torch.Tensor; a subclass could run method code (its
    ``__torch_function__``) later in the driver, outside the guard: LegalityError."""
    import torch

    if type(value) is not torch.Tensor:
        raise LegalityError(f"method {call}() returned a {type(value).__name__}, not a plain torch.Tensor")
    return value
