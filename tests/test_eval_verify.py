"""``pgolf eval --verify ARTIFACT`` (issue #22 item 9): someone else's artifact is scored with
pgolf's eval/ttt defaults plus the user's flags, not with the settings embedded in it; the
result records the artifact's sha256; corrupt / missing inputs are one line and exit 1."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from pgolf.cli import main
from pgolf.config import EvalConfig, TTTConfig, apply_sets, set_field
from pgolf.eval.verify import default_sets
from test_eval_cli import run_dir, tiny_run_config  # noqa: F401  (run_dir is a fixture)

art = pytest.importorskip("pgolf.quant.format.artifact")


def embedded_config():
    """The 'other author's' choices: a leaky n-gram mode, short windows, their stride, TTT."""
    cfg = tiny_run_config()
    for k, v in {"eval.ngram": "two-pass", "eval.stride": 4, "eval.seq_len": 16, "eval.ngram_max_order": 5,
                 "ttt.mode": "global", "ttt.global_chunk_tokens": 64}.items():
        set_field(cfg, k, v)
    return cfg


@pytest.fixture(scope="module")
def artifact(run_dir, tmp_path_factory):  # noqa: F811
    path = tmp_path_factory.mktemp("theirs") / "their.pgz"
    state = torch.load(run_dir / "model.pt", weights_only=True)
    art.write_artifact(path, art.encode(state, embedded_config()))
    return path


def data_flags(run_dir):  # noqa: F811
    cfg = json.loads((run_dir / "config.json").read_text())
    return ["--data", cfg["data_dir"], "--tokenizer", cfg["tokenizer"]]


def test_default_sets_reset_every_eval_and_ttt_field():
    cfg = apply_sets(embedded_config(), default_sets())
    assert cfg.eval == EvalConfig() and cfg.ttt == TTTConfig()
    assert embedded_config().eval != EvalConfig()  # so the line above can fail


def test_verify_uses_the_users_settings_not_the_embedded_ones(run_dir, artifact, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "v"
    flags = [*data_flags(run_dir), "--stride", "8", "--ngram", "none", "--quiet"]
    assert main(["eval", "--verify", str(artifact), *flags, "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("verify: ") and "ignored" in printed[0] and "ttt none" in printed[0]
    ver = json.loads((out / "eval.json").read_text())
    sha = hashlib.sha256(artifact.read_bytes()).hexdigest()
    assert ver["verify"]["artifact_sha256"] == sha == ver["artifact_sha256"]
    assert ver["verify"]["artifact_bytes"] == artifact.stat().st_size
    assert ver["verify"]["ignored"]["eval"]["ngram"] == "two-pass" and ver["verify"]["ignored"]["ttt"]["mode"] == "global"
    # the user's flags and pgolf's defaults: window = the model's training seq_len (32), no TTT
    assert ver["seq_len"] == 32 and ver["neural"]["sliding"]["stride"] == 8
    assert ver["ngram"]["mode"] == "none" and ver["ttt"]["mode"] == "none"

    # A plain eval of the same file with the same flags follows the embedded choices instead ...
    plain = tmp_path / "plain.json"
    assert main(["eval", str(artifact), *flags, "--out", str(plain)]) == 0
    emb = json.loads(plain.read_text())
    assert emb["seq_len"] == 16 and emb["ttt"]["mode"] == "global"
    assert emb["neural"]["standard"]["val_bpb"] != ver["neural"]["standard"]["val_bpb"]
    # ... and given the defaults explicitly it reproduces the verification's numbers.
    same = tmp_path / "same.json"
    assert main(["eval", str(artifact), *flags, "--seq-len", "32", "--ttt", "none", "--out", str(same)]) == 0
    ref = json.loads(same.read_text())
    assert ref["neural"] == ver["neural"] and ref["score"] == ver["score"]


def test_user_sets_apply_on_top_of_the_defaults(run_dir, artifact, tmp_path):  # noqa: F811
    out = tmp_path / "v"
    assert main(["eval", "--verify", str(artifact), *data_flags(run_dir), "--stride", "0", "--max-tokens", "200",
                 "--set", "eval.ngram_max_order=3", "--out", str(out), "--quiet"]) == 0
    ver = json.loads((out / "eval.json").read_text())
    assert ver["ngram"]["mode"] == "causal" and ver["ngram"]["orders"] == [2, 3]  # default mode, the user's order
    assert "sliding" not in ver["neural"] and ver["tokens"] == 192  # 199 targets in whole 32-token windows


def test_a_non_empty_out_needs_force(run_dir, artifact, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "v"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    argv = ["eval", "--verify", str(artifact), *data_flags(run_dir), "--stride", "0", "--ngram", "none",
            "--max-tokens", "100", "--out", str(out), "--quiet"]
    assert main(argv) == 1
    assert "not empty" in capsys.readouterr().err and not (out / "eval.json").exists()
    assert main(argv + ["--force"]) == 0 and (out / "eval.json").is_file()


@pytest.mark.parametrize("damage", ["truncated", "flipped", "garbage"])
def test_a_corrupt_artifact_is_one_line(run_dir, artifact, tmp_path, capsys, damage):  # noqa: F811
    data = bytearray(artifact.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "flipped":
        for i in range(8, len(data), 97):
            data[i] ^= 0x5A
    else:
        data = bytearray(b"PK\x03\x04 not an artifact" * 10)
    bad = tmp_path / "bad.pgz"
    bad.write_bytes(bytes(data))
    out = tmp_path / "v"
    assert main(["eval", "--verify", str(bad), *data_flags(run_dir), "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("pgolf: error:") and "\n" not in err and "bad.pgz" in err, err
    assert not out.exists()


def test_missing_inputs_are_one_line(run_dir, artifact, tmp_path, capsys):  # noqa: F811
    cases = [
        (["eval", "--verify", str(tmp_path / "nope.pgz"), *data_flags(run_dir)], "artifact not found"),
        (["eval", "--verify", str(artifact)], "--verify needs --data"),
        (["eval", "--verify", str(run_dir), *data_flags(run_dir)], "not a run directory"),
        (["eval", "--verify", str(artifact), "--data", str(tmp_path / "nodata")], "data directory not found"),
    ]
    for argv, why in cases:
        assert main(argv + ["--out", str(tmp_path / "v")]) == 1, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("pgolf: error:") and "\n" not in err and why in err, (argv, err)
    assert not (tmp_path / "v").exists()


def test_a_run_folder_around_the_artifact_does_not_supply_data(run_dir, artifact, tmp_path):  # noqa: F811
    theirs = tmp_path / "their_run"
    theirs.mkdir()
    (theirs / "artifact.pgz").write_bytes(artifact.read_bytes())
    cfg = json.loads((run_dir / "config.json").read_text())
    (theirs / "config.json").write_text(json.dumps({**cfg, "data_dir": str(tmp_path / "their_data"),
                                                    "tokenizer": str(tmp_path / "their.model")}))
    out = tmp_path / "v"
    assert main(["eval", "--verify", str(theirs / "artifact.pgz"), "--data", cfg["data_dir"], "--stride", "0",
                 "--ngram", "none", "--out", str(out), "--quiet"]) == 0
    ver = json.loads((out / "eval.json").read_text())
    assert ver["data_dir"] == cfg["data_dir"] and ver["tokenizer"] == str(Path(cfg["data_dir"]) / "tokenizer.model")
    assert not (theirs / "eval.json").exists()


@pytest.mark.parametrize("text", ["{not json", '{"model": {"vocab_size": -1}}'])
def test_a_broken_config_beside_the_artifact_is_not_read(run_dir, artifact, tmp_path, text):  # noqa: F811
    theirs = tmp_path / "their_run"
    theirs.mkdir()
    (theirs / "artifact.pgz").write_bytes(artifact.read_bytes())
    (theirs / "config.json").write_text(text)
    out = tmp_path / "v"
    assert main(["eval", "--verify", str(theirs / "artifact.pgz"), *data_flags(run_dir), "--stride", "0",
                 "--ngram", "none", "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "eval.json").read_text())["source"] == str(theirs / "artifact.pgz")


def test_a_tokenizer_that_is_not_the_data_s_is_refused(run_dir, artifact, tmp_path, capsys):  # noqa: F811
    from pgolf.data.tokenizer import train_tokenizer
    from test_eval_cli import TEXTS

    other = tmp_path / "other.model"
    train_tokenizer([t[::-1] for t in TEXTS], other, vocab_size=320)  # same size, other pieces
    cfg = json.loads((run_dir / "config.json").read_text())
    out = tmp_path / "v"
    assert main(["eval", "--verify", str(artifact), "--data", cfg["data_dir"], "--tokenizer", str(other),
                 "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pgolf: error:") and "\n" not in err, err
    assert not out.exists()
