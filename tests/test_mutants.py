"""The cheating copies of pgolf in tests/mutants/ (issue #18), each run as ``pgolf eval`` on a
tiny run directory: A (trains inside its scoring call and dodges a repeated call), B (a
target-dependent n-gram weight with consistent certificates), C1 (finds the stream through
Python frames; caught by the driver's audit-hook guard, pgolf.eval.guard) and C2 (a row reads
the next row of its batch) must each end with exit 3 and one ``LegalityError`` line on
stderr, and leave no eval.json; the honest command with the same flags exits 0.
Run: ``python -m pytest -q tests/test_mutants.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_eval_cli import run_dir  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[1]
MUTANTS = REPO / "tests" / "mutants"
FLAGS = {
    "a_train_in_logits": ["--ttt", "lora", "--ngram", "none"],
    "b_weight_peeks": ["--ngram", "causal"],
    "c1_frames": ["--ttt", "lora", "--ngram", "none"],
    "c2_next_row": ["--ttt", "global", "--ngram", "none", "--set", "ttt.chunk_tokens=8"],  # rows overlap
}


def _eval(script, run, out, flags):
    env = {**{k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK")}, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, str(script)] if script else [sys.executable, "-m", "pgolf"]
    return subprocess.run(cmd + ["eval", str(run), "--stride", "0", "--quiet", "--out", str(out), *flags],
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def honest_exit(run_dir, tmp_path_factory):  # noqa: F811
    """The honest command's exit code for a set of flags, run once per set (A and C1 share theirs)."""
    codes = {}

    def run(flags):
        if tuple(flags) not in codes:
            r = _eval(None, run_dir, tmp_path_factory.mktemp("honest") / "eval.json", flags)
            assert r.returncode == 0, r.stderr[-2000:]
            codes[tuple(flags)] = r.returncode
        return codes[tuple(flags)]
    return run


def _assert_stopped(r, out):
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 3, (r.returncode, r.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("pgolf: error: LegalityError: "), r.stderr[-2000:]
    assert not out.exists()


@pytest.mark.parametrize("name", ["a_train_in_logits", "b_weight_peeks", "c1_frames", "c2_next_row"])
def test_mutant_is_stopped_by_pgolf_eval(run_dir, tmp_path, name, honest_exit):  # noqa: F811
    assert honest_exit(FLAGS[name]) == 0
    out = tmp_path / "mutant.json"
    _assert_stopped(_eval(MUTANTS / f"{name}.py", run_dir, out, FLAGS[name]), out)
