"""One writer per run folder (issue #22, item 1): a second writer on a live run folder is
refused with one line naming the holder; a lock left by a SIGKILLed holder is taken over.

The holder is a real ``pgolf train`` subprocess on a micro config (no shared data needed);
the second writers run in-process, so each refusal costs no start-up.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pgolf.cli import main
from test_trainer import make_data, micro_sets


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("lockdata"))


def start_holder(data, run):
    d, tok = data
    sets = micro_sets(iterations=10**6, checkpoint_every=0)
    cmd = [sys.executable, "-m", "pgolf", "train", "--preset", "tiny", "--data", str(d), "--tokenizer", str(tok),
           "--out", str(run)] + [a for s in sets for a in ("--set", s)]
    log = open(run.parent / "holder.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline:  # live: training has logged a step
        if (run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").read_text().strip():
            return proc
        assert proc.poll() is None, (run.parent / "holder.log").read_text()
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("the holder never started training")


def one_error_line(capsys):
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return err


def test_second_writer_on_a_live_run_folder_is_refused(data, tmp_path, capsys):
    LOCK_NAME = ".pgolf.lock"
    run = tmp_path / "run"
    proc = start_holder(data, run)
    try:
        d, tok = data
        micro = [a for s in micro_sets(iterations=3) for a in ("--set", s)]
        writers = {
            "train": ["train", "--preset", "tiny", "--data", str(d), "--tokenizer", str(tok), "--out", str(run)] + micro,
            "train --resume": ["train", "--resume", str(run)],
            "quantize": ["quantize", str(run)],
            "eval": ["eval", str(run), "--quiet"],
            "run": ["run", "--preset", "tiny", "--data", str(d), "--tokenizer", str(tok), "--out", str(run)] + micro,
            "submit": ["submit", str(run), "--out", str(run), "--name", "x", "--author", "a", "--github-id", "a"],
        }
        config_before = (run / "config.json").read_text()
        for what, argv in writers.items():
            rc = main(argv)
            err = one_error_line(capsys)
            assert rc != 0, what
            assert len(err) == 1 and f"pid {proc.pid}" in err[0] and "in use" in err[0], (what, err)
        assert (run / "config.json").read_text() == config_before  # nothing of the holder's run was touched
        info = json.loads((run / LOCK_NAME).read_text())
        assert info["pid"] == proc.pid and "train" in info["command"]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # the holder died without releasing: the next writer takes the stale lock over, with a message
    from pgolf.runlock import run_lock

    with run_lock(run, "pgolf test"):
        err = capsys.readouterr().err
        assert "stale lock" in err and f"pid {proc.pid}" in err and "no longer running" in err
        assert json.loads((run / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not (run / LOCK_NAME).exists()  # released on exit


def test_lock_released_on_exception_and_empty_folder_removed(tmp_path):
    from pgolf.runlock import LOCK_NAME, LockedError, run_lock

    run = tmp_path / "new"
    with pytest.raises(RuntimeError):
        with run_lock(run, "pgolf test"):
            assert (run / LOCK_NAME).is_file()
            raise RuntimeError("boom")
    assert not run.exists()  # the lock made the folder and nothing else went in
    with run_lock(tmp_path, "one"):
        with pytest.raises(LockedError, match=f"pid {os.getpid()}"):
            # a second holder in another process sees this one
            raise LockedError(subprocess.run(
                [sys.executable, "-c", f"from pgolf.runlock import run_lock\nwith run_lock({str(tmp_path)!r}): pass"],
                capture_output=True, text=True).stderr.strip().splitlines()[-1])
    assert not (tmp_path / LOCK_NAME).exists()


def test_only_rank_zero_takes_the_lock(tmp_path, monkeypatch):
    from pgolf.runlock import run_lock

    monkeypatch.setenv("RANK", "1")
    with run_lock(tmp_path / "r", "pgolf train") as held:
        assert held is None and not (tmp_path / "r").exists()
