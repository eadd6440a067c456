"""Tokenizer loading/training and exact BPB byte accounting (DESIGN.md §3)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pgolf.data.tokenizer import (
    BOS_ID,
    MAX_SENTENCE_BYTES,
    ByteTables,
    count_bytes,
    load_tokenizer,
    train_tokenizer,
    training_sentences,
)
from pgolf.errors import PgolfError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
OFFICIAL = SHARED / "tokenizers" / "fineweb_1024_bpe.model"
DOCS = SHARED / "text" / "fineweb_general_docs.jsonl"

SAMPLE = [
    "The quick brown fox jumps over the lazy dog. 1234567890 times!\nSecond line here.",
    "Ünïcödé text — with dashes, «quotes», emoji 🦊 and 中文字符 mixed in.",
    "  leading spaces, trailing spaces   \n\n\nand blank lines\t\ttabs",
] * 20


@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tok") / "small.model"
    train_tokenizer(SAMPLE, path, vocab_size=320)
    return path


def test_official_tokenizer_counts_every_document_exactly():
    """count_bytes over [BOS] + encode(text) equals the UTF-8 length of the decoded text, per document."""
    if not (OFFICIAL.is_file() and DOCS.is_file()):
        pytest.skip("shared development data not available")
    sp = load_tokenizer(OFFICIAL)
    tables = ByteTables.from_tokenizer(sp)
    docs = [json.loads(line)["text"] for line in DOCS.read_text(encoding="utf-8").splitlines()]
    assert len(docs) == 496
    for i, ids in enumerate(sp.encode(docs)):
        tokens = np.array([BOS_ID, *ids], dtype=np.uint16)
        expected = len(sp.decode(ids).encode("utf-8"))
        assert tables.count_bytes(tokens) == expected, f"document {i}"


def test_byte_tables_match_decoding_with_byte_fallback(small_model):
    sp = load_tokenizer(small_model)
    tables = ByteTables.from_tokenizer(sp)
    assert tables.is_boundary[[0, 1, 2, 3]].all() and not tables.is_boundary[4:].any()
    assert (tables.base_bytes[4:260] == 1).all()  # the 256 byte-fallback pieces
    unseen = "Glyphs never seen in training: \u2603 \u16a0\u16c7\u16bb \U0001f600"
    assert any(sp.is_byte(i) for i in sp.encode(unseen))
    for text in SAMPLE[:3] + [unseen]:
        ids = sp.encode(text)
        tokens = np.array([BOS_ID, *ids])
        assert count_bytes(tokens, tables) == len(sp.decode(ids).encode("utf-8"))
        # several documents in one stream: BOS resets the leading-space rule
        stream = np.concatenate([tokens, tokens])
        assert tables.count_bytes(stream) == 2 * len(sp.decode(ids).encode("utf-8"))


def test_target_bytes_leading_space_rule(small_model):
    sp = load_tokenizer(small_model)
    tables = ByteTables.from_tokenizer(sp)
    spaced = next(i for i in range(sp.vocab_size()) if sp.id_to_piece(i).startswith("\u2581") and len(sp.id_to_piece(i)) > 1)
    n = len(sp.id_to_piece(spaced)[1:].encode("utf-8"))
    assert tables.target_bytes(np.array([spaced]), np.array([BOS_ID])).tolist() == [n]
    assert tables.target_bytes(np.array([spaced]), np.array([spaced])).tolist() == [n + 1]
    assert tables.count_bytes(np.array([BOS_ID])) == 0


def test_training_is_deterministic_and_uses_official_layout(tmp_path, small_model):
    again = tmp_path / "again.model"
    train_tokenizer(SAMPLE, again, vocab_size=320)
    assert again.read_bytes() == small_model.read_bytes()
    sp = load_tokenizer(again)
    assert [sp.id_to_piece(i) for i in range(4)] == ["<pad>", "<s>", "</s>", "<unk>"]
    assert sp.bos_id() == 1 and sp.eos_id() == 2 and sp.unk_id() == 3 and sp.pad_id() == 0
    assert not sp.id_to_piece(sp.encode("hello")[0]).startswith("\u2581")  # no dummy prefix
    assert all(len(sp.id_to_piece(i)) == 1 for i in sp.encode("12345"))  # split_digits


def test_training_sentences_keep_all_text_below_the_limit():
    long_line = " ".join(f"word{i}" for i in range(3000))  # ~ 26 KB on one line
    out = list(training_sentences(["a\x00b\n\n  c  ", long_line]))
    assert out[:2] == ["a b", "c"]
    assert all(0 < len(s.encode("utf-8")) <= MAX_SENTENCE_BYTES for s in out)
    assert " ".join(out[2:]) == long_line


def test_train_errors_are_pgolf_errors(tmp_path):
    with pytest.raises(PgolfError, match="no text"):
        train_tokenizer(["", "   "], tmp_path / "x.model")
    with pytest.raises(PgolfError, match="SentencePiece training failed"):
        train_tokenizer(["tiny"], tmp_path / "x.model", vocab_size=1024, hard_vocab_limit=True)
    assert not (tmp_path / "x.model").exists()


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(PgolfError, match="tokenizer file not found"):
        load_tokenizer(tmp_path / "missing.model")
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(PgolfError, match="not a SentencePiece model"):
        load_tokenizer(bad)
