"""CaseOps v1 transform, lossless CaseOps builds and per-token byte files (issue #12)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pgolf.cli import main
from pgolf.data import caseops
from pgolf.data.caseops import ALLCAPS, CAPNEXT, ESC, TITLE
from pgolf.data.shards import find_shards, read_shard, write_shard
from pgolf.data.sidecar import split_bytes, token_byte_counts
from pgolf.data.stats import dataset_stats
from pgolf.data.tokenizer import ByteTables, load_tokenizer
from pgolf.errors import PgolfError, ShardError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TEXT = SHARED / "text" / "fineweb_general_docs.jsonl"


@pytest.mark.parametrize("text, expected", [
    ("plain words", "plain words"),
    ("The", TITLE + "the"),
    ("A", TITLE + "a"),
    ("NASA", ALLCAPS + "nasa"),
    ("iPhone", "i" + CAPNEXT + "phone"),
    ("McDonald", TITLE + "mc" + CAPNEXT + "donald"),
    ("aBC", "a" + CAPNEXT + "b" + CAPNEXT + "c"),
    ("x" + TITLE, "x" + ESC + TITLE),
    ("ÉCOLE café", "É" + ALLCAPS + "cole café"),  # runs of ASCII letters only
    ("R2D2", TITLE + "r2" + TITLE + "d2"),
])
def test_encode_follows_the_record_rules(text, expected):
    assert caseops.encode(text) == expected
    assert caseops.decode(expected) == text


def test_round_trip_and_weights_on_awkward_strings():
    rng = np.random.default_rng(0)
    alphabet = list("aBcDeZz ,.\n\t1é€") + list(caseops.CONTROLS)
    for _ in range(300):
        s = "".join(rng.choice(alphabet, size=int(rng.integers(0, 30))))
        enc = caseops.encode(s)
        assert caseops.decode(enc) == s
        assert int(caseops.original_byte_weights(enc).sum()) == len(s.encode("utf-8"))


def test_token_byte_counts_reject_pieces_that_do_not_tile_the_text():
    surface = np.array([0, 1, 2, 3])
    assert token_byte_counts([2, 1], surface, np.array([1, 0, 1], np.uint8)).tolist() == [1, 1]
    with pytest.raises(ShardError):
        token_byte_counts([3, 3], surface, np.ones(4, np.uint8))


def test_byte_files_are_not_shards_and_must_cover_the_split(tmp_path):
    write_shard(tmp_path / "fineweb_val_000000.bin", np.array([1, 5, 6], np.uint16))
    write_shard(tmp_path / "fineweb_val_000001.bin", np.array([1, 7], np.uint16))
    write_shard(tmp_path / "fineweb_val_bytes_000000.bin", np.array([0, 2, 3], np.uint16))
    assert [p.name for p in find_shards(tmp_path, "val")] == ["fineweb_val_000000.bin", "fineweb_val_000001.bin"]
    with pytest.raises(ShardError, match="missing"):
        split_bytes(find_shards(tmp_path, "val"))
    write_shard(tmp_path / "fineweb_val_bytes_000001.bin", np.array([0, 4], np.uint16))
    assert split_bytes(find_shards(tmp_path, "val")).tolist() == [0, 2, 3, 0, 4]
    write_shard(tmp_path / "fineweb_val_bytes_000001.bin", np.array([0, 4, 4], np.uint16))
    with pytest.raises(ShardError, match="2 tokens"):
        split_bytes(find_shards(tmp_path, "val"))


def test_given_tokenizer_without_controls_is_refused(tmp_path):
    from pgolf.data.build import build_dataset
    from pgolf.data.tokenizer import train_tokenizer

    tok = tmp_path / "plain.model"
    train_tokenizer([f"Some text number {i} with words" for i in range(50)], tok, vocab_size=300)
    with pytest.raises(PgolfError, match="not a CaseOps tokenizer"):
        build_dataset(lambda: iter(["One Doc", "Two Doc"]), tmp_path / "out", val_docs=1, tokenizer=tok, caseops="v1",
                      show_progress=False)


@pytest.mark.skipif(not TEXT.is_file(), reason="shared FineWeb text not present")
def test_caseops_build_is_lossless_and_counts_original_bytes(tmp_path, capsys):
    out = tmp_path / "co"
    assert main(["data", "build", "--text", str(TEXT), "--caseops", "v1", "--vocab-size", "2048",
                 "--val-docs", "50", "--out", str(out), "--quiet"]) == 0
    docs = [json.loads(line)["text"] for line in TEXT.read_text(encoding="utf-8").splitlines() if line.strip()]
    docs = [d for d in docs if d.strip()]
    sp = load_tokenizer(out / "tokenizer.model")
    for split, chosen in (("val", docs[:50]), ("train", docs[50:])):
        tokens = np.concatenate([np.asarray(read_shard(p)) for p in find_shards(out, split)])
        counts = split_bytes(find_shards(out, split))
        starts = list(np.flatnonzero(tokens == 1)) + [len(tokens)]
        assert len(starts) - 1 == len(chosen)
        for i, doc in enumerate(chosen):
            ids = tokens[starts[i] + 1: starts[i + 1]].tolist()
            assert caseops.decode(sp.decode(ids)) == doc
            assert int(counts[starts[i]: starts[i + 1]].sum()) == len(doc.encode("utf-8"))
    capsys.readouterr()
    assert main(["data", "stats", str(out), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["splits"]["val"]["bytes"] == sum(len(d.encode("utf-8")) for d in docs[:50])
    # the tokenizer's piece tables alone would count each control piece as 3 bytes
    assert ByteTables.from_tokenizer(sp).count_bytes(read_shard(out / "fineweb_val_000000.bin")) > stats["splits"]["val"]["bytes"]
    assert dataset_stats(out)["splits"]["val"]["bytes"] == stats["splits"]["val"]["bytes"]  # byte files need no tokenizer
    assert json.loads((out / "build.json").read_text())["caseops"] == "v1"


def test_evaluate_counts_bytes_from_byte_files():
    import math

    import torch

    from pgolf.model.bpb import evaluate

    class Uniform(torch.nn.Module):  # log-prob -ln V for every target
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward_logits(self, idx):
            return torch.zeros(*idx.shape, 16) + self.w

    tables = ByteTables(np.ones(16, np.int32), np.zeros(16, bool), np.zeros(16, bool))
    tokens = np.arange(33) % 16
    counts = np.arange(33) % 3  # differs from the tables' 1 byte per token
    res = evaluate(Uniform(), tokens, tables, seq_len=8, progress=False, token_bytes=counts)
    assert res.bytes == int(counts[1:].sum())
    assert res.bpb == pytest.approx(32 * math.log(16) / math.log(2) / counts[1:].sum())
    assert evaluate(Uniform(), tokens, tables, seq_len=8, progress=False).bytes == 32


def test_check_rejects_a_byte_file_of_the_wrong_length(tmp_path, capsys):
    write_shard(tmp_path / "fineweb_val_000000.bin", np.array([1, 5, 6], np.uint16))
    write_shard(tmp_path / "fineweb_train_000000.bin", np.array([1, 7], np.uint16))
    write_shard(tmp_path / "fineweb_val_bytes_000000.bin", np.array([0, 2], np.uint16))
    assert main(["data", "check", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "fineweb_val_bytes_000000.bin: 2 byte counts for 3 tokens" in err and len(err.strip().splitlines()) == 1
    write_shard(tmp_path / "fineweb_val_bytes_000000.bin", np.array([0, 2, 1], np.uint16))
    assert main(["data", "check", str(tmp_path)]) == 0
