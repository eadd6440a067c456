"""Deterministic, resumable training batches and the validation stream.

The train shards of a data folder form one cyclic token stream. It is cut into
*blocks* of ``seq_len + 1`` tokens starting every ``seq_len`` tokens (block ``b`` gives
``x = t[b*L : b*L+L]`` and ``y = t[b*L+1 : b*L+L+1]``). An optimizer step consumes
``batch_tokens / seq_len`` consecutive blocks of the (optionally per-epoch shuffled)
block order; they are split into ``world * accum`` micro-batches of
``micro_batch_seqs`` sequences, micro-batch ``j = accum_step * world + rank``. So the
global batch of a step is the same for any split into processes and accumulation
steps, and the whole state is one integer (blocks consumed), saved in checkpoints::

    loader = TrainLoader(data_dir, seq_len=256, micro_batch_seqs=16, batch_tokens=8192,
                         rank=0, world=1, order="shuffle", seed=1337)
    for micro in range(loader.accum):
        x, y = loader.micro_batch(micro)     # int64 tensors (micro_batch_seqs, seq_len)
    loader.advance()                         # next optimizer step
    state = loader.state_dict()              # {"blocks": ...}

``order="sequential"`` reads the stream in file order (the seed's loader);
``"shuffle"`` permutes the blocks with a seeded permutation per epoch.
:func:`load_val_tokens` returns the validation split truncated to whole windows;
:func:`load_val_bytes` its per-token original byte counts when the split has byte files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pgolf.data.shards import find_shards, read_shard
from pgolf.data.sidecar import split_bytes
from pgolf.errors import ConfigError, ShardError

ORDERS = ("sequential", "shuffle")


class TokenStream:
    """The concatenation of shards as one random-access token array (memory-mapped)."""

    def __init__(self, paths: list[Path], vocab_size: int | None = None):
        self.paths = list(paths)
        self.parts = [read_shard(p) for p in self.paths]
        if vocab_size is not None:
            for p, part in zip(self.paths, self.parts):
                if len(part) and int(part.max()) >= vocab_size:
                    read_shard(p, vocab_size)  # raises a ShardError naming the offender
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])
        self.total = int(self.starts[-1])

    def take(self, start: int, n: int) -> np.ndarray:
        """Tokens ``[start, start + n)`` of the stream (must lie inside it)."""
        out = np.empty(n, dtype=np.int64)
        done = 0
        i = int(np.searchsorted(self.starts, start, side="right") - 1)
        pos = start
        while done < n:
            off = pos - int(self.starts[i])
            chunk = self.parts[i][off : off + (n - done)]
            out[done : done + len(chunk)] = chunk
            done += len(chunk)
            pos += len(chunk)
            i += 1
        return out


class TrainLoader:
    """Train batches for one rank; see the module docstring for the layout."""

    def __init__(
        self,
        data: str | os.PathLike,
        seq_len: int,
        micro_batch_seqs: int,
        batch_tokens: int,
        rank: int = 0,
        world: int = 1,
        order: str = "sequential",
        seed: int = 0,
        vocab_size: int | None = None,
    ):
        if order not in ORDERS:
            raise ConfigError(f"unknown loader order {order!r}; choose one of: {', '.join(ORDERS)}")
        per_step = seq_len * micro_batch_seqs * world
        if batch_tokens % per_step:
            raise ConfigError(
                f"batch_tokens {batch_tokens} is not a multiple of seq_len*micro_batch_seqs*world "
                f"= {seq_len}*{micro_batch_seqs}*{world} = {per_step}"
            )
        self.stream = TokenStream(find_shards(data, "train"), vocab_size)
        self.seq_len, self.mbs = seq_len, micro_batch_seqs
        self.rank, self.world = rank, world
        self.accum = batch_tokens // per_step
        self.step_blocks = batch_tokens // seq_len
        self.num_blocks = (self.stream.total - 1) // seq_len
        if self.num_blocks < 1:
            raise ShardError(f"{data}: train split has {self.stream.total} tokens, fewer than seq_len+1 = {seq_len + 1}")
        self.order, self.seed = order, seed
        self.blocks = 0  # blocks consumed by completed steps
        self._perm_epoch, self._perm = -1, None

    # ------------------------------------------------------------------ positions
    def _block_id(self, k: int) -> int:
        epoch, i = divmod(k, self.num_blocks)
        if self.order == "sequential":
            return i
        if epoch != self._perm_epoch:
            rng = np.random.Generator(np.random.PCG64([self.seed, epoch]))
            self._perm, self._perm_epoch = rng.permutation(self.num_blocks), epoch
        return int(self._perm[i])

    def micro_batch(self, accum_step: int):
        """(x, y) int64 tensors of shape (micro_batch_seqs, seq_len) for this rank."""
        import torch

        if not 0 <= accum_step < self.accum:
            raise ValueError(f"accum_step {accum_step} outside 0..{self.accum - 1}")
        j = accum_step * self.world + self.rank
        first = self.blocks + j * self.mbs
        L = self.seq_len
        rows = np.stack([self.stream.take(self._block_id(first + s) * L, L + 1) for s in range(self.mbs)])
        t = torch.from_numpy(rows)
        return t[:, :-1].contiguous(), t[:, 1:].contiguous()

    def advance(self) -> None:
        """Move to the next optimizer step."""
        self.blocks += self.step_blocks

    @property
    def epoch(self) -> float:
        return self.blocks / self.num_blocks

    def state_dict(self) -> dict:
        return {"blocks": int(self.blocks)}

    def load_state_dict(self, state: dict) -> None:
        self.blocks = int(state["blocks"])


def load_val_tokens(data: str | os.PathLike, seq_len: int, vocab_size: int | None = None) -> np.ndarray:
    """The validation split (all ``fineweb_val_*`` shards) truncated to ``1 + k*seq_len`` tokens."""
    paths = find_shards(data, "val")
    tokens = np.concatenate([np.asarray(read_shard(p, vocab_size)) for p in paths])
    k = (len(tokens) - 1) // seq_len
    if k < 1:
        raise ShardError(f"{data}: validation split has {len(tokens)} tokens, fewer than seq_len+1 = {seq_len + 1}")
    return tokens[: k * seq_len + 1]


def load_val_bytes(data: str | os.PathLike, num_tokens: int) -> np.ndarray | None:
    """Original UTF-8 bytes of the first ``num_tokens`` validation tokens, from the split's
    per-token byte files (:mod:`pgolf.data.sidecar`); None when it has none."""
    counts = split_bytes(find_shards(data, "val"))
    return None if counts is None else counts[:num_tokens]
