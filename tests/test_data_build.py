"""`pgolf data build` / stats: text → tokenizer + shards, splits, atomicity, CLI output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pgolf.cli import main
from pgolf.data.build import build_dataset, build_from_paths, iter_documents
from pgolf.data.shards import load_tokens, read_shard
from pgolf.data.stats import dataset_stats
from pgolf.data.tokenizer import BOS_ID, load_tokenizer, train_tokenizer
from pgolf.errors import PgolfError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def _doc(i: int) -> str:
    return f"Document {i}: " + " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(30 + i % 11)) + "."


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tok") / "tok.model"
    train_tokenizer([_doc(i) for i in range(40)], path, vocab_size=300)
    return path


@pytest.fixture
def jsonl(tmp_path) -> Path:
    p = tmp_path / "docs.jsonl"
    lines = [json.dumps({"text": _doc(i)}) for i in range(12)]
    lines.insert(3, json.dumps({"text": "   "}))  # an empty document: skipped
    lines.insert(5, "")  # a blank line: ignored
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


def _expected(sp, docs):
    return np.concatenate([[BOS_ID, *ids] for ids in sp.encode(docs)]).tolist()


def test_build_layout_and_tokens(tmp_path, jsonl, tok):
    out = tmp_path / "out"
    r = build_from_paths([jsonl], out, val_docs=4, tokenizer=tok, show_progress=False)
    sp = load_tokenizer(out / "tokenizer.model")
    assert (out / "tokenizer.model").read_bytes() == tok.read_bytes()
    docs = [_doc(i) for i in range(12)]
    assert load_tokens(out, "val").tolist() == _expected(sp, docs[:4])
    assert load_tokens(out, "train").tolist() == _expected(sp, docs[4:])
    assert r.empty_docs == 1
    assert r.splits["val"]["docs"] == 4 and r.splits["train"]["docs"] == 8
    info = json.loads((out / "build.json").read_text())
    assert info["splits"] == r.splits and info["tokenizer_trained"] is False
    assert sorted(p.name for p in out.iterdir()) == [
        "build.json", "fineweb_train_000000.bin", "fineweb_val_000000.bin", "tokenizer.model"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_small_shards_split_documents_across_files(tmp_path, jsonl, tok):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    build_from_paths([jsonl], whole, val_docs=2, tokenizer=tok, show_progress=False)
    build_from_paths([jsonl], parts, val_docs=2, tokenizer=tok, shard_tokens=50, show_progress=False)
    train = sorted(parts.glob("fineweb_train_*.bin"))
    assert len(train) > 3
    assert all(len(read_shard(p)) == 50 for p in train[:-1]) and 0 < len(read_shard(train[-1])) <= 50
    for split in ("val", "train"):
        assert load_tokens(parts, split).tolist() == load_tokens(whole, split).tolist()


def test_txt_document_modes(tmp_path):
    a = tmp_path / "a.txt"
    a.write_text("para one line 1\npara one line 2\n\n  \npara two\n", encoding="utf-8")
    b = tmp_path / "sub" / "b.txt"
    b.parent.mkdir()
    b.write_text("another file", encoding="utf-8")
    assert list(iter_documents([a])) == [a.read_text()]
    assert [d.strip() for d in iter_documents([a], "paragraphs")] == ["para one line 1\npara one line 2", "para two"]
    assert [d for d in iter_documents([a], "lines") if d.strip()] == ["para one line 1", "para one line 2", "para two"]
    assert list(iter_documents([tmp_path])) == [a.read_text(), "another file"]  # folders: sorted, recursive


def test_trained_tokenizer_and_cli_summary_stats_check(tmp_path, capsys):
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": _doc(i)}) + "\n" for i in range(60)), encoding="utf-8")
    out = tmp_path / "out"
    assert main(["data", "build", "--text", str(src), "--out", str(out), "--val-docs", "5", "--vocab-size", "300", "--quiet"]) == 0
    summary = capsys.readouterr().out
    assert "tokenizer: trained, vocab 300" in summary and "5 documents" in summary
    assert main(["data", "check", str(out)]) == 0
    assert "ids < 300" in capsys.readouterr().out
    assert main(["data", "stats", str(out), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    sp = load_tokenizer(out / "tokenizer.model")
    docs = [_doc(i) for i in range(60)]
    for split, part in (("val", docs[:5]), ("train", docs[5:])):
        s = stats["splits"][split]
        assert s["docs"] == len(part) and s["files"] == 1
        assert s["tokens"] == len(_expected(sp, part))
        assert s["bytes"] == sum(len(sp.decode(ids).encode("utf-8")) for ids in sp.encode(part))


def test_stats_without_tokenizer_has_null_bytes(tmp_path, jsonl, tok, capsys):
    out = tmp_path / "out"
    build_from_paths([jsonl], out, val_docs=2, tokenizer=tok, show_progress=False)
    (out / "tokenizer.model").unlink()
    stats = dataset_stats(out)
    assert stats["splits"]["val"]["bytes"] is None and stats["splits"]["val"]["docs"] == 2
    assert main(["data", "stats", str(out), "--json"]) == 0
    out_text = capsys.readouterr().out
    assert len(out_text.strip().splitlines()) == 1 and json.loads(out_text)["note"]


def test_failure_leaves_nothing(tmp_path, tok, capsys):
    src = tmp_path / "docs.jsonl"
    src.write_text(json.dumps({"text": "fine"}) + "\n" + "{broken\n", encoding="utf-8")
    out = tmp_path / "out"
    code = main(["data", "build", "--text", str(src), "--out", str(out), "--tokenizer", str(tok), "--val-docs", "0", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and f"{src}:2: not valid JSON" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.jsonl"]


@pytest.mark.parametrize(
    "argv, problem",
    [
        (["--text", "missing.jsonl"], "text file not found"),
        (["--text", "doc.csv"], "unsupported file type .csv"),
        (["--text", "docs.jsonl", "--val-docs", "99"], "leaves none for training"),
    ],
)
def test_build_input_errors(tmp_path, jsonl, tok, capsys, monkeypatch, argv, problem):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "doc.csv").write_text("x")
    code = main(["data", "build", *argv, "--out", "out", "--tokenizer", str(tok), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and problem in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_untrainable_split_and_force_rules(tmp_path, jsonl, tok):
    with pytest.raises(PgolfError, match="no training documents"):
        build_from_paths([jsonl], tmp_path / "x", val_docs=50, vocab_size=300, show_progress=False)
    out = tmp_path / "out"
    build_from_paths([jsonl], out, val_docs=2, tokenizer=tok, show_progress=False)
    with pytest.raises(PgolfError, match="pass --force"):
        build_from_paths([jsonl], out, val_docs=3, tokenizer=tok, show_progress=False)
    build_from_paths([jsonl], out, val_docs=3, tokenizer=tok, force=True, show_progress=False)
    assert dataset_stats(out)["splits"]["val"]["docs"] == 3
    (out / "notes.txt").write_text("mine")
    with pytest.raises(PgolfError, match="non-dataset files"):
        build_from_paths([jsonl], out, val_docs=2, tokenizer=tok, force=True, show_progress=False)
    assert (out / "notes.txt").read_text() == "mine"


def test_build_dataset_rejects_mismatched_vocab(tmp_path, tok):
    with pytest.raises(PgolfError, match="--vocab-size is 1024"):
        build_dataset(lambda: ["a b c"], tmp_path / "o", val_docs=0, vocab_size=1024, tokenizer=tok, show_progress=False)


def test_acceptance_build_fineweb_general_docs(tmp_path, capsys):
    src = SHARED / "text" / "fineweb_general_docs.jsonl"
    if not src.is_file():
        pytest.skip("shared development data not available")
    out = tmp_path / "fw"
    assert main(["data", "build", "--text", str(src), "--out", str(out), "--val-docs", "50", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["data", "check", str(out)]) == 0
    assert main(["data", "stats", str(out), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out.splitlines()[-1])["splits"]
    assert stats["val"]["docs"] == 50 and stats["train"]["docs"] == 446


def test_too_small_vocabulary_says_what_size_would_work(tmp_path, capsys):
    """SentencePiece's raw internal error (with the staging folder's random name) becomes one
    line naming the size that works; a build at that size then succeeds."""
    import re

    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": _doc(i)}) + "\n" for i in range(20)), encoding="utf-8")
    out = tmp_path / "out"
    assert main(["data", "build", "--text", str(src), "--out", str(out), "--val-docs", "2", "--vocab-size", "40",
                 "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "too small" in err[0] and "INTERNAL" not in err[0] and str(tmp_path) not in err[0], err
    need = int(re.search(r"--vocab-size (\d+) or more", err[0]).group(1))
    assert main(["data", "build", "--text", str(src), "--out", str(out), "--val-docs", "2", "--vocab-size", str(need),
                 "--quiet"]) == 0
