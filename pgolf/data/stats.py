"""Dataset statistics and validation for a folder (or glob pattern) of shards.

Per split: the number of shard files, tokens, documents (count of BOS tokens) and the
BPB byte count — for each file the bytes over its targets ``t[1:]`` (DESIGN.md §3),
summed over the split's files. Bytes come from the per-token byte files
(:mod:`pgolf.data.sidecar`) where a shard has one, else from a tokenizer; with neither
they are ``None``.
Every shard is validated first (header, size, and token ids below the vocabulary size
when it is known), so a malformed file raises :class:`pgolf.errors.ShardError`.

    stats = dataset_stats("data/fineweb_sp1024", tokenizer="tokenizer.model")
    stats["splits"]["val"]  # {"files": 1, "tokens": 663244, "docs": 248, "bytes": 1572083}
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pgolf.data.shards import SPLITS, find_shards, read_shard, shard_num_tokens, split_of, validate_dir
from pgolf.data.sidecar import read_sidecar
from pgolf.data.tokenizer import BOS_ID, ByteTables, load_tokenizer
from pgolf.errors import ShardError

TOKENIZER_FILE = "tokenizer.model"


def default_tokenizer(data: str | os.PathLike) -> Path | None:
    """``DIR/tokenizer.model`` when ``data`` is a folder holding one, else None."""
    p = Path(data) / TOKENIZER_FILE
    return p if Path(data).is_dir() and p.is_file() else None


def shard_paths(data: str | os.PathLike) -> list[Path]:
    """The shards of a data folder (train and val) or of a glob pattern, sorted by split then name."""
    d = Path(data)
    if d.is_dir():
        return [p for p, _ in validate_dir(d)]  # raises if the folder has no shards
    paths = find_shards(str(data))
    unknown = [p for p in paths if split_of(p) is None]
    if unknown:
        raise ShardError(f"{unknown[0]}: not a fineweb_train_*.bin / fineweb_val_*.bin shard name")
    return paths


def check_dataset(data: str | os.PathLike, vocab_size: int | None = None) -> list[tuple[Path, int]]:
    """Validate every shard and its per-token byte file, if any; returns (path, tokens)
    pairs. Raises ShardError on the first bad one."""
    found = [(p, len(read_shard(p, vocab_size))) for p in shard_paths(data)]
    for p, n in found:
        read_sidecar(p, n)
    return found


def dataset_stats(data: str | os.PathLike, tokenizer: str | os.PathLike | None = None, vocab_size: int | None = None) -> dict:
    """``{"splits": {split: {"files", "tokens", "docs", "bytes"}}, "tokenizer": path or None}``."""
    tables = None
    if tokenizer is not None:
        tables = ByteTables.from_tokenizer(load_tokenizer(tokenizer))
        vocab_size = tables.vocab_size
    splits = {s: {"files": 0, "tokens": 0, "docs": 0, "bytes": 0 if tables else None} for s in ("val", "train")}
    paths = shard_paths(data)
    sidecars = {p: read_sidecar(p, shard_num_tokens(p)) for p in paths}
    for split in splits:
        have = [c is not None for p, c in sidecars.items() if split_of(p) == split]
        if any(have) and not all(have):
            raise ShardError(f"{data}: only some {split} shards have per-token byte files")
        if any(have):
            splits[split]["bytes"] = 0
    for path in paths:
        tokens = read_shard(path, vocab_size)
        entry = splits[split_of(path)]
        entry["files"] += 1
        entry["tokens"] += len(tokens)
        entry["docs"] += int(np.count_nonzero(tokens == BOS_ID))
        if sidecars[path] is not None:
            entry["bytes"] += int(np.asarray(sidecars[path][1:]).sum(dtype=np.int64))
        elif tables is not None:
            entry["bytes"] += tables.count_bytes(tokens)
    assert set(splits) == set(SPLITS)
    return {"splits": splits, "tokenizer": str(tokenizer) if tokenizer is not None else None}
