"""Shard format: round trip, validation, and the CLI's one-line errors for each malformed case."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pgolf.cli import main
from pgolf.data.shards import (
    HEADER_BYTES,
    MAGIC,
    find_shards,
    load_tokens,
    read_shard,
    shard_name,
    shard_num_tokens,
    split_of,
    validate_dir,
    write_shard,
)
from pgolf.errors import ShardError


def _write(path: Path, tokens, magic=MAGIC, version=1, count=None, extra=b"") -> Path:
    header = np.zeros(256, dtype="<i4")
    header[:3] = magic, version, len(tokens) if count is None else count
    path.write_bytes(header.tobytes() + np.asarray(tokens, dtype="<u2").tobytes() + extra)
    return path


def test_round_trip(tmp_path):
    tokens = np.array([1, 5, 1023, 0, 65535, 7], dtype=np.int64)
    p = tmp_path / shard_name("val", 0)
    write_shard(p, tokens)
    assert p.name == "fineweb_val_000000.bin"
    assert p.stat().st_size == HEADER_BYTES + 2 * len(tokens)
    header = np.fromfile(p, dtype="<i4", count=3)
    assert header.tolist() == [MAGIC, 1, len(tokens)]
    got = read_shard(p)
    assert got.dtype == np.uint16 and got.tolist() == tokens.tolist()
    assert shard_num_tokens(p) == len(tokens)
    assert [x.name for x in tmp_path.iterdir()] == [p.name]  # no temp file left behind


def test_empty_shard(tmp_path):
    p = tmp_path / shard_name("train", 0)
    write_shard(p, np.zeros(0, dtype=np.uint16))
    assert len(read_shard(p, vocab_size=10)) == 0


def test_write_rejects_bad_tokens(tmp_path):
    with pytest.raises(ShardError, match="uint16"):
        write_shard(tmp_path / "x.bin", np.array([1, 70000]))
    with pytest.raises(ShardError, match="one-dimensional"):
        write_shard(tmp_path / "x.bin", np.zeros((2, 2)))


def test_validate_dir_and_load(tmp_path):
    write_shard(tmp_path / shard_name("train", 1), np.array([1, 3]))
    write_shard(tmp_path / shard_name("train", 0), np.array([1, 2]))
    write_shard(tmp_path / shard_name("val", 0), np.array([1, 4, 4]))
    found = validate_dir(tmp_path, vocab_size=5)
    assert [(p.name, n) for p, n in found] == [
        ("fineweb_train_000000.bin", 2),
        ("fineweb_train_000001.bin", 2),
        ("fineweb_val_000000.bin", 3),
    ]
    assert load_tokens(tmp_path, "train").tolist() == [1, 2, 1, 3]
    assert [split_of(p) for p, _ in found] == ["train", "train", "val"]
    assert split_of("other.bin") is None
    with pytest.raises(ShardError, match="no shard files match"):
        find_shards(tmp_path / "fineweb_test_*.bin")


@pytest.mark.parametrize(
    "kind, expect",
    [
        ("magic", "bad magic"),
        ("version", "unsupported shard version"),
        ("size", "size mismatch"),
        ("truncated", "truncated"),
        ("header_only", "truncated"),
        ("token_id", "token id 1024 at position 2 is >= vocab size 1024"),
    ],
)
def test_read_shard_errors_name_file_and_problem(tmp_path, kind, expect):
    p = _malformed(tmp_path, kind)
    with pytest.raises(ShardError) as e:
        read_shard(p, vocab_size=1024)
    assert str(p) in str(e.value) and expect in str(e.value)


def _malformed(d: Path, kind: str) -> Path:
    """A shard file with one specific defect (in its own folder, as the only shard)."""
    p = d / shard_name("val", 0)
    good = [1, 10, 20, 30]
    if kind == "magic":
        return _write(p, good, magic=12345)
    if kind == "version":
        return _write(p, good, version=2)
    if kind == "size":
        return _write(p, good, extra=b"\x00\x00")  # two bytes more than the header says
    if kind == "truncated":
        return _write(p, good, count=10)  # header says 10 tokens, file holds 4
    if kind == "header_only":
        p.write_bytes(b"\x00" * 100)
        return p
    if kind == "token_id":
        return _write(p, [1, 5, 1024, 7])
    raise AssertionError(kind)


def _run_cli(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _assert_one_line_error(code, err, path_text, problem):
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert path_text in lines[0] and problem in lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "kind, problem",
    [
        ("magic", "bad magic"),
        ("version", "unsupported shard version"),
        ("size", "size mismatch"),
        ("truncated", "truncated"),
        ("token_id", "is >= vocab size 1024"),
    ],
)
@pytest.mark.parametrize("command", ["check", "stats"])
def test_cli_malformed_shard(tmp_path, capsys, kind, problem, command):
    p = _malformed(tmp_path, kind)
    write_shard(tmp_path / shard_name("train", 0), np.array([1, 2, 3]))
    extra = ["--vocab-size", "1024"] if command == "check" else []
    if command == "stats" and kind == "token_id":
        tok = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tokenizers" / "fineweb_1024_bpe.model"
        if not tok.is_file():
            pytest.skip("official tokenizer not available")
        extra = ["--tokenizer", str(tok)]
    code, out, err = _run_cli(["data", command, str(tmp_path), *extra], capsys)
    _assert_one_line_error(code, err, str(p), problem)
    assert out == ""


@pytest.mark.parametrize("command", ["check", "stats"])
def test_cli_pattern_matching_nothing(tmp_path, capsys, command):
    pattern = str(tmp_path / "fineweb_val_*.bin")
    code, out, err = _run_cli(["data", command, pattern], capsys)
    _assert_one_line_error(code, err, pattern, "no shard files match")


def test_cli_empty_dir(tmp_path, capsys):
    code, _, err = _run_cli(["data", "check", str(tmp_path)], capsys)
    _assert_one_line_error(code, err, str(tmp_path), "no fineweb_train_*.bin or fineweb_val_*.bin shards")


def test_cli_check_ok_and_vocab_from_tokenizer_model(tmp_path, capsys):
    write_shard(tmp_path / shard_name("val", 0), np.array([1, 2, 3]))
    code, out, _ = _run_cli(["data", "check", str(tmp_path)], capsys)
    assert code == 0 and "ok: 1 shards, 3 tokens" in out and "not checked" in out


def test_cli_subprocess_no_traceback(tmp_path):
    """The real entry point (python -m pgolf) prints one line and exits 1 on a bad shard."""
    p = _malformed(tmp_path, "magic")
    r = subprocess.run([sys.executable, "-m", "pgolf", "data", "check", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [f"pgolf: error: {p}: bad magic 12345 (expected {MAGIC}); not a token shard"]
