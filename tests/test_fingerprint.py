"""Tokenizer fingerprints (issue #22, item 5): the tokenizer in use must be the one the data
was built with, and its vocabulary must bound the data's ids and match the model's, checked
before training or evaluating (one line, exit 2; ``--allow-tokenizer-mismatch`` overrides the
fingerprint, never the vocabulary bound).

Micro data and configs (no shared data): a second tokenizer of the same size trained on other
text must be refused by ``pgolf train``, ``pgolf run`` and ``pgolf eval``; a smaller tokenizer on
larger data must be refused before training starts, not at the final evaluation.
"""

import json

import numpy as np
import pytest

from pgolf.cli import main
from pgolf.data import fingerprint
from pgolf.data.tokenizer import train_tokenizer
from test_trainer import VOCAB, make_data, micro_sets


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("fpdata"))


def _other_tokenizer(path, vocab):
    rng = np.random.default_rng(1)
    words = ["zeta", "omega", "river", "stone", "light", "north", "paper", "cloud", "seven", "green"]
    train_tokenizer([" ".join(rng.choice(words, size=40)) + "!" for _ in range(200)], path, vocab_size=vocab)
    return path


@pytest.fixture(scope="module")
def same_size(tmp_path_factory):
    return _other_tokenizer(tmp_path_factory.mktemp("fptok") / "other.model", VOCAB)


#: A tokenizer smaller than the data's (the micro text needs at least 280 pieces).
SMALL = 282


@pytest.fixture(scope="module")
def smaller(tmp_path_factory):
    return _other_tokenizer(tmp_path_factory.mktemp("fptok") / "small.model", SMALL)


def _train_argv(data_dir, tok, out, *extra, **sets):
    argv = ["train", "--preset", "tiny", "--data", str(data_dir), "--tokenizer", str(tok), "--out", str(out)]
    for s in micro_sets(**sets):
        argv += ["--set", s]
    return argv + list(extra)


def _one_error_line(capsys, *words):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pgolf: error:"), err
    for w in words:
        assert w in err[0], err
    return err[0]


def test_train_refuses_a_same_size_other_tokenizer(data, same_size, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_train_argv(data[0], same_size, out)) == 2
    line = _one_error_line(capsys, "tokenizer", "--allow-tokenizer-mismatch")
    assert str(same_size) in line
    assert not (out / "config.json").exists() and not (out / "train.log").exists()


def test_run_refuses_a_same_size_other_tokenizer(data, same_size, tmp_path, capsys):
    argv = ["run", "--preset", "tiny", "--data", str(data[0]), "--tokenizer", str(same_size), "--out", str(tmp_path / "r")]
    for s in micro_sets():
        argv += ["--set", s]
    assert main(argv) == 2
    _one_error_line(capsys, "tokenizer")
    assert not (tmp_path / "r" / "config.json").exists()


def test_smaller_tokenizer_is_refused_before_training_even_with_the_override(data, smaller, tmp_path, capsys):
    assert fingerprint.max_token_id(data[0]) >= SMALL  # the data uses ids the smaller tokenizer lacks
    out = tmp_path / "run"
    assert main(_train_argv(data[0], smaller, out, "--allow-tokenizer-mismatch")) == 2
    _one_error_line(capsys, "vocabulary", str(SMALL))
    assert not (out / "config.json").exists() and not (out / "checkpoint.pt").exists()


def test_override_trains_and_eval_checks_too(data, same_size, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_train_argv(data[0], data[1], out, iterations=2)) == 0
    assert (out / "model.pt").is_file()
    capsys.readouterr()
    # eval with the other tokenizer: refused before anything is evaluated, no eval.json
    assert main(["eval", str(out), "--tokenizer", str(same_size), "--ngram", "none", "--stride", "0", "--quiet"]) == 2
    _one_error_line(capsys, "tokenizer")
    assert not (out / "eval.json").exists()
    # the override evaluates, with one note saying what was allowed
    assert main(["eval", str(out), "--tokenizer", str(same_size), "--ngram", "none", "--stride", "0", "--quiet",
                 "--allow-tokenizer-mismatch"]) == 0
    assert "tokenizer" in capsys.readouterr().err and (out / "eval.json").is_file()
    # the override on train trains with the other tokenizer
    out2 = tmp_path / "run2"
    assert main(_train_argv(data[0], same_size, out2, "--allow-tokenizer-mismatch", iterations=1)) == 0
    assert (out2 / "model.pt").is_file()


def test_build_json_is_the_reference(data, tmp_path):
    """The data's fingerprint is build.json's tokenizer_sha256 when the folder has one."""
    d, tok = data
    copy = tmp_path / "d"
    copy.mkdir()
    for f in d.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    assert fingerprint.data_fingerprint(copy)[0] == fingerprint.sha256_file(tok)
    (copy / "build.json").write_text(json.dumps({"tokenizer_sha256": "0" * 64, "vocab_size": VOCAB}))
    assert fingerprint.data_fingerprint(copy)[0] == "0" * 64
    with pytest.raises(fingerprint.TokenizerMismatch, match="build.json"):
        fingerprint.check_tokenizer(copy, tok, model_vocab=VOCAB)
    assert fingerprint.check_tokenizer(copy, tok, model_vocab=VOCAB, allow_mismatch=True)  # a note
    assert fingerprint.check_tokenizer(d, tok, model_vocab=VOCAB) is None  # the same tokenizer: silent


def test_data_check_takes_a_tokenizer(data, same_size, smaller, capsys):
    d, tok = data
    assert main(["data", "check", str(d), "--tokenizer", str(tok)]) == 0
    assert f"ids < {VOCAB}" in capsys.readouterr().out
    assert main(["data", "check", str(d), "--tokenizer", str(same_size)]) == 2
    _one_error_line(capsys, "tokenizer")
    assert main(["data", "check", str(d), "--tokenizer", str(smaller)]) == 1  # ids checked against its vocabulary
    _one_error_line(capsys, f">= vocab size {SMALL}")
