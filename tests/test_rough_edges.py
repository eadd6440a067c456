"""Issue #22 item 8, the smaller rough edges, one test each: ``submit`` into a non-empty
folder, ``pgolf train``'s default preset, the one-seed submission README, ``data fineweb``
with the Hub unreachable, and ``demo --help`` against what the demo evaluates.
(``eval --help``'s doubled defaults and ``data check --tokenizer`` are in
tests/test_cli_help.py and tests/test_stats.py; the training ETA in tests/test_train_eta.py;
the docs in tests/test_docs.py.) Run: ``python -m pytest -q tests/test_rough_edges.py``.
"""

from __future__ import annotations

import json
import socket

import pytest

from pgolf.cli import build_parser, main
from pgolf.pipeline.demo import demo_config
from pgolf.presets import get_preset
from test_submit import fake_seed, submit_args


def test_submit_refuses_a_non_empty_out_unless_forced(tmp_path, capsys):
    run, out = tmp_path / "run", tmp_path / "rec"
    fake_seed(run, 1)
    out.mkdir()
    (out / "mine.txt").write_text("someone's work")
    assert main(submit_args(run, out)) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not empty" in err and "--force" in err
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]
    assert main(submit_args(run, out, "--force")) == 0
    assert (out / "submission.json").is_file() and (out / "mine.txt").read_text() == "someone's work"


def _dry_run(capsys, *args) -> dict:
    assert main(["train", "--dry-run", *args]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("params: ")
    return json.loads("\n".join(out[:-1]))


def test_train_defaults_to_the_tiny_preset_like_run(capsys):
    default = _dry_run(capsys)
    assert default == _dry_run(capsys, "--preset", "tiny")
    assert default["preset"] == "tiny" and default["model"] == json.loads(json.dumps(get_preset("tiny").to_dict()["model"]))
    assert default["model"] != _dry_run(capsys, "--preset", "seed")["model"]
    run_default = build_parser().parse_args(["run", "--data", "d"]).preset
    assert run_default == "tiny"


def test_one_seed_readme_claims_no_spread(tmp_path):
    run1, run2 = tmp_path / "one", tmp_path / "two"
    fake_seed(run1, 1)
    for s in (1, 2):
        fake_seed(run2 / f"seed_{s}", s)
    assert main(submit_args(run1, tmp_path / "r1")) == 0
    assert main(submit_args(run2, tmp_path / "r2")) == 0
    one, two = ((tmp_path / r / "README.md").read_text() for r in ("r1", "r2"))
    assert "±" not in one and "sample std over 1" not in one and "one seed: no spread estimate" in one
    assert "± " in two and "sample std over 2 seeds" in two


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once closed


def test_fineweb_offline_says_unreachable_and_leaves_no_folder(tmp_path, capsys):
    out = tmp_path / "fw"
    rc = main(["data", "fineweb", "--out", str(out), "--endpoint", f"http://127.0.0.1:{_closed_port()}",
               "--retries", "0", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1, err
    assert "unreachable" in err and "rerun to resume" not in err
    assert not out.exists()


def _demo_help() -> str:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return " ".join(sub.choices["demo"].format_help().split())


def test_demo_help_matches_what_the_demo_evaluates():
    help_text, cfg = _demo_help(), demo_config()
    assert cfg.eval.stride == 0  # the demo skips the sliding-window pass ...
    assert "no sliding-window pass" in help_text  # ... and says so
    assert "standard, sliding" not in help_text
    assert cfg.eval.ngram == "causal" and "causal n-gram" in help_text
