"""The drivers' run-time guard (pgolf.eval.guard): inside a method call, taking a frame by
each known route, walking the gc graph, native memory access and /proc/self/mem are
LegalityErrors, also when the method catches or converts the error; library bookkeeping,
other threads' own frames and calls outside the guard are not; a harness method that walks
frames in update() fails run_stream. Run: ``python -m pytest -q tests/test_guard.py``.
"""

from __future__ import annotations

import collections
import gc
import inspect
import sys
import threading

import numpy as np
import pytest
import torch

from pgolf.eval.guard import method_call, plain_tensor
from pgolf.eval.reveal import LegalityError
from pgolf.eval.stream import ModelMethod, run_stream
from test_stream import BOS, CHUNK, L, V, multi_doc_stream, small_model


def _tb_frame():
    try:
        raise ValueError
    except ValueError as e:
        return e.__traceback__.tb_frame


def _gen_frame():
    g = (i for i in range(1))
    return g.gi_frame


def _proc_mem():
    with open("/proc/self/mem", "rb"):
        pass


def _ctypes():
    import ctypes

    return ctypes.string_at(id(object()), 1)


ROUTES = {"getframe": sys._getframe, "inspect": inspect.currentframe, "traceback": _tb_frame,
          "generator": _gen_frame, "referrers": lambda: gc.get_referrers(ROUTES), "objects": gc.get_objects,
          "threads": sys._current_frames, "trace": lambda: sys.settrace(None), "proc_mem": _proc_mem,
          "ctypes": _ctypes}


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_each_route_is_refused_inside_a_method_call(route):
    with pytest.raises(LegalityError, match="method update()"):
        with method_call("update"):
            ROUTES[route]()
    ROUTES["getframe"]()  # disarmed again: the same call is fine outside


def _reach():
    return sys._getframe()


def test_the_error_names_the_method_line_that_reached():
    with pytest.raises(LegalityError) as err:
        with method_call("logits"):
            _reach()
    assert f"(at {__file__}:{_reach.__code__.co_firstlineno + 1})" in str(err.value)


def test_a_method_that_catches_or_converts_the_error_still_fails():
    with pytest.raises(LegalityError, match="sys._getframe"):
        with method_call("train"):
            try:
                sys._getframe()
            except LegalityError:
                pass
    with pytest.raises(LegalityError, match="sys._getframe"):
        with method_call("train"):
            try:
                sys._getframe()
            except LegalityError:
                raise RuntimeError("something else") from None


def test_honest_work_and_library_bookkeeping_pass():
    with method_call("logits"):
        collections.namedtuple("Pair", "a b")
        out = torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3))
    assert out.shape == (2, 4)


def test_another_threads_own_frames_are_allowed_but_not_the_armed_threads():
    seen = {}

    def own():
        seen["own"] = sys._getframe() is not None

    def others():
        try:
            sys._current_frames()
        except LegalityError:
            seen["others"] = "refused"

    with pytest.raises(LegalityError):
        with method_call("update"):
            for fn in (own, others):
                t = threading.Thread(target=fn)
                t.start()
                t.join()
    assert seen == {"own": True, "others": "refused"}


def test_a_tensor_subclass_is_refused():
    class Sneaky(torch.Tensor):
        pass

    plain_tensor(torch.zeros(1), "logits")
    with pytest.raises(LegalityError, match="Sneaky"):
        plain_tensor(torch.zeros(1).as_subclass(Sneaky), "logits")


class FramesInUpdate(ModelMethod):
    """Scores honestly, but looks for the driver's stream in update() (mutant C1's route)."""

    def update(self, view, chunk, inputs):
        f = sys._getframe()
        while f is not None and not isinstance(f.f_locals.get("stream"), np.ndarray):
            f = f.f_back


def test_run_stream_fails_a_method_that_walks_frames():
    stream = multi_doc_stream()
    honest = run_stream(ModelMethod(small_model()), stream, V, seq_len=L, chunk=CHUNK, bos_id=BOS)
    assert np.isfinite(honest.logp).all()
    with pytest.raises(LegalityError, match=r"method update\(\) called sys._getframe"):
        run_stream(FramesInUpdate(small_model()), stream, V, seq_len=L, chunk=CHUNK, bos_id=BOS)
