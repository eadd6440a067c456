"""Per-token byte files ("sidecars"): each token's count of original UTF-8 bytes.

A tokenizer that transforms text first (CaseOps) cannot recover the original bytes
from its pieces, so bits per byte needs them stored: beside each shard
``fineweb_{split}_NNNNNN.bin`` the build writes ``fineweb_{split}_bytes_NNNNNN.bin``
(the records' layout), a shard-format file of uint16 counts parallel to the tokens
(BOS and CaseOps operators count 0). When a split's sidecars are present every bpb in
pgolf (eval, trainer, stats) uses them instead of the tokenizer's byte tables.

    counts = split_bytes(find_shards("data/mine", "val"))   # None when absent
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pgolf.data.shards import read_shard
from pgolf.errors import ShardError


def sidecar_name(split: str, index: int) -> str:
    """The byte file of shard ``index`` of ``split``."""
    return f"fineweb_{split}_bytes_{index:06d}.bin"


def sidecar_for(shard: str | os.PathLike) -> Path:
    """``.../fineweb_val_000003.bin`` -> ``.../fineweb_val_bytes_000003.bin``."""
    p = Path(shard)
    head, _, index = p.stem.rpartition("_")
    return p.with_name(f"{head}_bytes_{index}{p.suffix}")


def read_sidecar(shard: str | os.PathLike, num_tokens: int) -> np.ndarray | None:
    """The byte counts of one shard (None when it has no sidecar); checked to be parallel to it."""
    path = sidecar_for(shard)
    if not path.exists():
        return None
    counts = read_shard(path)
    if len(counts) != num_tokens:
        raise ShardError(f"{path}: {len(counts)} byte counts for {num_tokens} tokens in {Path(shard).name}")
    return counts


def split_bytes(shards: list[Path]) -> np.ndarray | None:
    """Byte counts of a split's shards concatenated (None when no shard has a sidecar).

    Raises ShardError when only some of the shards have one, or a count is misaligned.
    """
    parts = [read_sidecar(p, len(read_shard(p))) for p in shards]
    missing = [p for p, c in zip(shards, parts) if c is None]
    if len(missing) == len(parts):
        return None
    if missing:
        raise ShardError(f"{sidecar_for(missing[0])}: missing, while other shards of the split have byte files")
    return np.concatenate([np.asarray(c) for c in parts])


def token_byte_counts(ids, surface: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Original bytes of each token of one document.

    ``surface[id]`` is the number of bytes of the tokenized text a piece spans
    (:func:`pgolf.data.tokenizer.surface_bytes`); ``weights`` has one entry per byte of
    that text, 1 where it is an original byte (:func:`pgolf.data.caseops.original_byte_weights`).
    Raises ShardError when the pieces do not tile the text (an unknown piece).
    """
    ends = np.cumsum(surface[np.asarray(ids, dtype=np.int64)])
    if len(ends) and ends[-1] != len(weights) or not len(ends) and len(weights):
        raise ShardError(f"tokens span {int(ends[-1]) if len(ends) else 0} bytes of a {len(weights)}-byte text; "
                         "the tokenizer lost text (unknown pieces?)")
    cum = np.concatenate(([0], np.cumsum(weights, dtype=np.int64)))
    return cum[ends] - cum[np.concatenate(([0], ends[:-1]))]
