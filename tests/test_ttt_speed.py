"""benchmarks/ttt_speed.py runs end to end on a small run, its TTT methods isolated as in ``pgolf eval``."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_eval_cli import run_dir  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # a benchmark's smoke test: python -m pytest -q -m slow tests/test_ttt_speed.py
def test_ttt_speed_times_the_isolated_methods(run_dir, tmp_path):  # noqa: F811
    out = tmp_path / "speed.json"
    cfg = json.loads((run_dir / "config.json").read_text())
    env = {**{k: v for k, v in os.environ.items() if k != "PGOLF_TTT_IN_PROCESS"}, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "ttt_speed.py"), "--run", str(run_dir),
                        "--data", cfg["data_dir"], "--max-tokens", "4000", "--phase-docs", "2,4", "--batch", "4",
                        "--stride", "16", "--json", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "in a process of their own" in r.stdout
    res = json.loads(out.read_text())
    assert res["isolated"] is True and set(res["modes"]) == {"sliding", "lora", "phased"}
    for mode, row in res["modes"].items():
        assert row["seconds"] > 0 and math.isfinite(row["bpb"]) and row["fwd_per_target"] >= 1, (mode, row)
    assert res["modes"]["phased"]["trained_tokens"] > res["modes"]["lora"]["trained_tokens"]  # + the phases' SGD
