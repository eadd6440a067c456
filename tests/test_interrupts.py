"""Interrupts (issue #22, item 6): Ctrl-C in ``pgolf train`` checkpoints and exits 130; in
``pgolf run`` it says "interrupted" and exits 130 (not "model.pt: trained model not
found"); a SIGKILLed ``pgolf data build`` leaves a staging folder that the next build removes.

Each test drives a real subprocess (micro configs, no shared data) and signals it.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from test_trainer import make_data, micro_sets


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("intdata"))


def wait_for(cond, proc, what, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        if proc.poll() is not None:
            raise AssertionError(f"{what}: the process ended first ({proc.returncode}): {proc.communicate()}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"{what}: timed out")


def start(argv, data, out):
    d, tok = data
    sets = [a for s in micro_sets(iterations=10**6) for a in ("--set", s)]
    cmd = [sys.executable, "-m", "pgolf", *argv, "--preset", "tiny", "--data", str(d), "--tokenizer", str(tok),
           "--out", str(out), *sets]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def training(out):
    return lambda: (out / "metrics.jsonl").is_file() and bool((out / "metrics.jsonl").read_text().strip())


@pytest.mark.parametrize("command", ["train", pytest.param("run", marks=pytest.mark.slow)])  # run: ~7 s more
def test_ctrl_c_checkpoints_and_exits_130(data, tmp_path, command):
    out = tmp_path / "run"
    proc = start([command], data, out)
    wait_for(training(out), proc, "training start")
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, (stdout, stderr)
    assert "interrupted" in stderr and "not found" not in stderr + stdout
    assert (out / "checkpoint.pt").is_file() and not (out / "model.pt").exists()
    if command == "train":
        assert f"pgolf train --resume {out}" in stderr


def test_sigkilled_data_build_staging_is_cleaned_on_the_next_build(tmp_path):
    docs = tmp_path / "docs.jsonl"
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    docs.write_text("\n".join(json.dumps({"text": " ".join(words[(i * k) % 12] for k in range(60)) + f" {i}."})
                              for i in range(4000)) + "\n")
    out = tmp_path / "data"
    cmd = [sys.executable, "-m", "pgolf", "data", "build", "--text", str(docs), "--out", str(out), "--vocab-size", "300"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    staging = lambda: [n for n in os.listdir(tmp_path) if n.startswith(".data.building-")]  # noqa: E731
    wait_for(staging, proc, "staging folder")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = staging()
    assert left and not out.exists()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert staging() == [], "the killed build's staging folder is still there"
    assert f"removed {tmp_path / left[0]}" in r.stderr and "no longer running" in r.stderr
    assert (out / "build.json").is_file()
