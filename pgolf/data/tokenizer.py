"""SentencePiece tokenizer: load, train with the official sp1024 settings, count bytes.

Bits-per-byte needs the exact number of UTF-8 bytes each target token contributes
(DESIGN.md §3). For target ``y`` with previous token ``x``::

    bytes(y | x) = base_bytes[y] + (has_leading_space[y] and not is_boundary[x])

Control/unknown/unused pieces are boundaries with 0 bytes; byte-fallback pieces count 1
byte; other pieces count the UTF-8 length of the piece without its leading "▁" (the
"▁" becomes a space byte unless it follows a boundary token such as BOS).

    tok = load_tokenizer("fineweb_1024_bpe.model")
    tables = ByteTables.from_tokenizer(tok)
    n_bytes = tables.count_bytes(tokens)   # bytes over targets tokens[1:]
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from pgolf.errors import PgolfError

SPACE_MARK = "\u2581"  # "▁"
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3

#: The official parameter-golf sp1024 trainer settings (DESIGN.md §3).
OFFICIAL_TRAINER_OPTIONS = dict(
    model_type="bpe",
    byte_fallback=True,
    split_digits=True,
    normalization_rule_name="nmt_nfkc",
    add_dummy_prefix=False,
    pad_id=PAD_ID,
    bos_id=BOS_ID,
    eos_id=EOS_ID,
    unk_id=UNK_ID,
    character_coverage=0.9995,
    hard_vocab_limit=True,
)


def load_tokenizer(path: str | os.PathLike):
    """Load a SentencePiece model file; PgolfError if missing or not a model."""
    import sentencepiece as spm

    p = Path(path)
    if not p.is_file():
        raise PgolfError(f"{p}: tokenizer file not found")
    try:
        return spm.SentencePieceProcessor(model_file=str(p))
    except (RuntimeError, OSError) as e:
        raise PgolfError(f"{p}: not a SentencePiece model ({str(e).strip().splitlines()[0]})") from None


def train_tokenizer(texts: Iterable[str], out_path: str | os.PathLike, vocab_size: int = 1024, **overrides) -> None:
    """Train a BPE tokenizer with the official settings and write it to ``out_path``.

    Deterministic for the same input texts. Written atomically.
    """
    import sentencepiece as spm

    from pgolf.fileio import atomic_write_bytes

    model = io.BytesIO()
    options = {**OFFICIAL_TRAINER_OPTIONS, "vocab_size": vocab_size, "num_threads": 1, **overrides}
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(t for t in texts if t), model_writer=model, minloglevel=2, **options
    )
    atomic_write_bytes(out_path, model.getvalue())


@dataclass(frozen=True)
class ByteTables:
    """Per-token byte tables for exact bits-per-byte accounting."""

    base_bytes: np.ndarray  # int32[V]: UTF-8 bytes of the piece without its leading "▁"
    has_leading_space: np.ndarray  # bool[V]: piece starts with "▁"
    is_boundary: np.ndarray  # bool[V]: control/unknown/unused pieces

    @property
    def vocab_size(self) -> int:
        return int(self.base_bytes.shape[0])

    @classmethod
    def from_tokenizer(cls, sp) -> "ByteTables":
        v = sp.vocab_size()
        base = np.zeros(v, dtype=np.int32)
        space = np.zeros(v, dtype=bool)
        boundary = np.zeros(v, dtype=bool)
        for i in range(v):
            if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
                boundary[i] = True
                continue
            if sp.is_byte(i):
                base[i] = 1
                continue
            piece = sp.id_to_piece(i)
            if piece.startswith(SPACE_MARK):
                space[i] = True
                piece = piece[1:]
            base[i] = len(piece.encode("utf-8"))
        return cls(base, space, boundary)

    def target_bytes(self, targets: np.ndarray, prev: np.ndarray) -> np.ndarray:
        """Bytes contributed by each target token given its previous token (int64)."""
        y = np.asarray(targets, dtype=np.int64)
        x = np.asarray(prev, dtype=np.int64)
        return self.base_bytes[y].astype(np.int64) + (self.has_leading_space[y] & ~self.is_boundary[x])

    def count_bytes(self, tokens: np.ndarray) -> int:
        """Total bytes over the targets ``tokens[1:]`` of a token sequence."""
        t = np.asarray(tokens)
        if len(t) < 2:
            return 0
        return int(self.target_bytes(t[1:], t[:-1]).sum())


def byte_tables(path: str | os.PathLike) -> ByteTables:
    """Load a tokenizer file and build its byte tables."""
    return ByteTables.from_tokenizer(load_tokenizer(path))


def count_bytes(tokens: np.ndarray, tables: ByteTables) -> int:
    """Bytes over targets ``tokens[1:]`` (functional form of ByteTables.count_bytes)."""
    return tables.count_bytes(tokens)
