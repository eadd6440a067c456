"""Eval-time methods run in a process of their own (pgolf.eval.isolate, issue #18): nothing
they can reach holds a token they were not handed, and isolation changes no score.

* Mutant C3 (tests/mutants/c3_heap_search.py) switches the guard off and saves every
  integer array it can reach (frames, the garbage collector's objects, their attributes).
  In the driver's process (``PGOLF_TTT_IN_PROCESS=1``) that includes a stretch of the
  stream it was never handed; in its own process (the default) it does not.
* Per-token scores are bit-identical with and without isolation, for every TTT mode.
* A method that fails, or whose process dies, gives one clear error.

Run: ``python -m pytest -q tests/test_isolation.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pgolf.data.shards import read_shard
from pgolf.data.tokenizer import BOS_ID
from pgolf.errors import PgolfError
from pgolf.eval.isolate import RemoteMethod
from pgolf.eval.stream import units_of
from pgolf.model.bpb import val_stream
from test_eval_cli import run_dir  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[1]
CHUNK = 8


def _eval(run, out, flags, script=None, extra_env=None):
    env = {**{k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "PGOLF_TTT_IN_PROCESS")},
           "PYTHONPATH": str(REPO), **(extra_env or {})}
    cmd = [sys.executable, str(script)] if script else [sys.executable, "-m", "pgolf"]
    r = subprocess.run(cmd + ["eval", str(run), "--stride", "0", "--quiet", "--out", str(out), *flags],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(Path(out).read_text())


def _never_handed(run) -> np.ndarray:
    """Tokens of the longest document after its first chunk: at the first train() of lora TTT
    the method has been handed only each document's first chunk (and nothing was revealed)."""
    cfg = json.loads((run / "config.json").read_text())
    tokens = read_shard(Path(cfg["data_dir"]) / "fineweb_val_000000.bin")
    stream = val_stream(tokens, cfg["train"]["seq_len"])
    s, e = max(units_of(stream, BOS_ID), key=lambda u: u[1] - u[0])
    part = stream[s + CHUNK: e].astype(np.int64)
    assert len(part) >= 32, "the fixture's longest document is too short for this test"
    return part


def _holds(arrays, part) -> bool:
    needle = part.tobytes()
    return any(needle in a.tobytes() for a in arrays if a.size >= part.size)


def _found(dump: Path) -> list[np.ndarray]:
    files = list(dump.glob("found_*.npz"))
    assert len(files) == 1, files
    with np.load(files[0]) as z:
        return [z[k] for k in z.files]


def test_a_method_in_its_own_process_reaches_no_unrevealed_token(run_dir, tmp_path):  # noqa: F811
    part = _never_handed(run_dir)
    flags = ["--ttt", "lora", "--ngram", "none", "--set", f"ttt.chunk_tokens={CHUNK}"]
    script = REPO / "tests" / "mutants" / "c3_heap_search.py"
    results = {}
    for mode, extra in (("in_process", {"PGOLF_TTT_IN_PROCESS": "1"}), ("isolated", {})):
        dump = tmp_path / mode
        dump.mkdir()
        res = _eval(run_dir, tmp_path / f"{mode}.json", flags, script, {"PGOLF_MUTANT_DUMP": str(dump), **extra})
        assert res["ttt"]["isolated"] is (mode == "isolated")
        results[mode] = (_holds(_found(dump), part), res["ttt"]["val_bpb"])
    assert results["in_process"][0], "the search found nothing in the driver's process: it cannot show anything"
    assert not results["isolated"][0], "a method in its own process reached tokens it was never handed"
    assert results["in_process"][1] == results["isolated"][1]


@pytest.mark.parametrize("mode", ["lora", pytest.param("global", marks=pytest.mark.slow),  # global: C2 too
                                  pytest.param("phased", marks=pytest.mark.slow)])  # phased: the torchrun test
def test_isolation_changes_no_score(run_dir, tmp_path, mode):  # noqa: F811
    flags = ["--ttt", mode, "--ngram", "none", "--set", f"ttt.chunk_tokens={CHUNK}", "--set", "ttt.phase_docs=[2,4]"]
    logp = {}
    for name, extra in (("in_process", ["--ttt-in-process"]), ("isolated", [])):  # the flag; C3 above: the env var
        npy = tmp_path / f"{name}.npy"
        res = _eval(run_dir, tmp_path / f"{name}.json", flags + extra + ["--per-token", str(npy)])
        assert res["ttt"]["isolated"] is (name == "isolated") and res["score"]["method"] == f"ttt-{mode}"
        logp[name] = np.load(npy)
    assert np.array_equal(logp["in_process"], logp["isolated"])


class Failing:
    """A method built in the child (this module is importable there) that fails on demand."""

    name = "failing"

    def __init__(self, how: str):
        self.how = how

    def logits(self, x):
        if self.how == "die":
            os._exit(7)
        if self.how == "raise":
            raise ValueError("bad window")
        return torch.zeros(*x.shape, 5)


@pytest.mark.parametrize("how,message", [("raise", "the eval method failed: ValueError: bad window"),
                                         ("die", "ended unexpectedly (exit code 7)")])
def test_a_failing_method_gives_one_clear_error(how, message):
    with RemoteMethod(Failing, (how,), {}, "cpu") as m:
        with pytest.raises(PgolfError, match=message.replace("(", r"\(").replace(")", r"\)")):
            m.logits(torch.zeros(2, 3, dtype=torch.long))


def test_logits_come_back_as_the_drivers_own_copy():
    with RemoteMethod(Failing, ("ok",), {}, "cpu") as m:
        a = m.logits(torch.zeros(2, 3, dtype=torch.long))
        b = m.logits(torch.zeros(1, 4, dtype=torch.long))
        assert a.shape == (2, 3, 5) and b.shape == (1, 4, 5) and a.data_ptr() != b.data_ptr()
        assert not a.is_shared() and m.name == "failing"
