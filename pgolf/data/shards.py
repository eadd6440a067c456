"""Token shards in the parameter-golf challenge format: read, write, validate.

A shard is a little-endian ``int32[256]`` header (``magic=20240520``, ``version=1``,
``num_tokens``) followed by ``num_tokens`` little-endian ``uint16`` token ids; the file
size must be exactly ``1024 + 2 * num_tokens``. Files are named
``fineweb_train_NNNNNN.bin`` and ``fineweb_val_NNNNNN.bin``. Per-token byte files
``fineweb_{split}_bytes_NNNNNN.bin`` (:mod:`pgolf.data.sidecar`) share the format and
are never listed as shards. Every malformed case
raises :class:`pgolf.errors.ShardError` naming the file and the problem.

    tokens = read_shard("data/fineweb_val_000000.bin")   # np.memmap of uint16
    write_shard("out/fineweb_train_000000.bin", tokens)  # atomic
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np

from pgolf.errors import ShardError
from pgolf.fileio import atomic_path

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
TOKEN_DTYPE = np.dtype("<u2")
SPLITS = ("train", "val")


def _read_header(path: Path) -> np.ndarray:
    if not path.is_file():
        raise ShardError(f"{path}: shard file not found")
    try:
        size = path.stat().st_size
        if size < HEADER_BYTES:
            raise ShardError(f"{path}: truncated shard ({size} bytes, header needs {HEADER_BYTES})")
        with open(path, "rb") as f:
            header = np.frombuffer(f.read(HEADER_BYTES), dtype="<i4")
    except OSError as e:
        raise ShardError(f"{path}: cannot read shard ({e.strerror or e})") from None
    if int(header[0]) != MAGIC:
        raise ShardError(f"{path}: bad magic {int(header[0])} (expected {MAGIC}); not a token shard")
    if int(header[1]) != VERSION:
        raise ShardError(f"{path}: unsupported shard version {int(header[1])} (expected {VERSION})")
    num_tokens = int(header[2])
    if num_tokens < 0:
        raise ShardError(f"{path}: negative token count {num_tokens} in header")
    expected = HEADER_BYTES + 2 * num_tokens
    if size < expected:
        raise ShardError(f"{path}: truncated shard: header says {num_tokens} tokens ({expected} bytes) but file has {size} bytes")
    if size != expected:
        raise ShardError(f"{path}: size mismatch: header says {num_tokens} tokens ({expected} bytes) but file has {size} bytes")
    return header


def shard_num_tokens(path: str | os.PathLike) -> int:
    """Number of tokens in a shard, from its (validated) header."""
    return int(_read_header(Path(path))[2])


def read_shard(path: str | os.PathLike, vocab_size: int | None = None) -> np.ndarray:
    """Memory-map a shard's tokens (read-only ``uint16``), validating header and size.

    With ``vocab_size`` the ids are also checked to be below it (this reads the file).
    """
    p = Path(path)
    n = int(_read_header(p)[2])
    tokens = np.memmap(p, dtype=TOKEN_DTYPE, mode="r", offset=HEADER_BYTES, shape=(n,)) if n else np.zeros(0, TOKEN_DTYPE)
    if vocab_size is not None and n:
        check_token_ids(tokens, vocab_size, p)
    return tokens


def check_token_ids(tokens: np.ndarray, vocab_size: int, path: str | os.PathLike) -> None:
    """Raise ShardError if any id is >= vocab_size (reports the first offender)."""
    top = int(tokens.max()) if len(tokens) else 0
    if top >= vocab_size:
        where = int(np.argmax(np.asarray(tokens) >= vocab_size))
        raise ShardError(f"{path}: token id {int(tokens[where])} at position {where} is >= vocab size {vocab_size}")


def write_shard(path: str | os.PathLike, tokens: np.ndarray) -> None:
    """Write tokens (values < 65536) as a shard, atomically."""
    arr = np.asarray(tokens)
    if arr.ndim != 1:
        raise ShardError(f"{path}: tokens must be one-dimensional, got shape {arr.shape}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 65535):
        raise ShardError(f"{path}: token ids must fit in uint16")
    if arr.size >= 2**31:
        raise ShardError(f"{path}: {arr.size} tokens do not fit the int32 header; write several shards")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = MAGIC, VERSION, arr.size
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(header.tobytes())
            f.write(arr.astype(TOKEN_DTYPE, copy=False).tobytes())
            f.flush()
            os.fsync(f.fileno())


def shard_name(split: str, index: int) -> str:
    """The challenge's file name for shard ``index`` of ``split``."""
    return f"fineweb_{split}_{index:06d}.bin"


def is_byte_file(path: str | os.PathLike) -> bool:
    """True for a per-token byte file ``fineweb_{split}_bytes_*.bin`` (see pgolf.data.sidecar)."""
    return any(Path(path).name.startswith(f"fineweb_{split}_bytes_") for split in SPLITS)


def split_of(path: str | os.PathLike) -> str | None:
    """The split ("train"/"val") a shard file name belongs to, or None (byte files included)."""
    name = Path(path).name
    if is_byte_file(name):
        return None
    for split in SPLITS:
        if name.startswith(f"fineweb_{split}_") and name.endswith(".bin"):
            return split
    return None


def find_shards(pattern_or_dir: str | os.PathLike, split: str | None = None) -> list[Path]:
    """Sorted shard paths from a directory (with ``split``) or a glob pattern.

    Raises ShardError when nothing matches.
    """
    s = str(pattern_or_dir)
    if split is not None and os.path.isdir(s):
        pattern = os.path.join(s, f"fineweb_{split}_*.bin")
    else:
        pattern = s
    paths = sorted(Path(p) for p in glob.glob(pattern) if not is_byte_file(p))
    if not paths:
        raise ShardError(f"{pattern}: no shard files match")
    return paths


def load_tokens(pattern_or_dir: str | os.PathLike, split: str | None = None, vocab_size: int | None = None) -> np.ndarray:
    """All tokens of the matching shards concatenated in file order (a new array)."""
    parts = [np.asarray(read_shard(p, vocab_size)) for p in find_shards(pattern_or_dir, split)]
    return np.concatenate(parts) if parts else np.zeros(0, TOKEN_DTYPE)


def validate_dir(data_dir: str | os.PathLike, vocab_size: int | None = None) -> list[tuple[Path, int]]:
    """Validate every shard of every split in ``data_dir``; return (path, tokens) pairs.

    Raises ShardError for the first bad file, or when the folder has no shards.
    """
    d = Path(data_dir)
    if not d.is_dir():
        raise ShardError(f"{d}: data directory not found")
    found: list[tuple[Path, int]] = []
    for split in SPLITS:
        for p in sorted(q for q in d.glob(f"fineweb_{split}_*.bin") if not is_byte_file(q)):
            tokens = read_shard(p, vocab_size)
            found.append((p, len(tokens)))
    if not found:
        raise ShardError(f"{d}: no fineweb_train_*.bin or fineweb_val_*.bin shards")
    return found
