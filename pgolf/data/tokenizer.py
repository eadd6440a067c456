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
import itertools
import re
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from pgolf.errors import PgolfError

SPACE_MARK = "\u2581"  # "▁"
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3

#: The official parameter-golf sp1024 trainer settings (DESIGN.md §3). Checked against the
#: trainer_spec stored inside the official ``fineweb_1024_bpe.model``: character_coverage
#: 0.999 and hard_vocab_limit false (the challenge's exporter sets both explicitly).
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
    character_coverage=0.999,
    hard_vocab_limit=False,
)

#: CaseOps tokenizers (pgolf.data.caseops) must decode byte for byte: no normalization,
#: no whitespace folding, and the four case controls reserved as user-defined symbols.
CASEOPS_TRAINER_OPTIONS = dict(
    normalization_rule_name="identity",
    remove_extra_whitespaces=False,
    user_defined_symbols=["\ue001", "\ue002", "\ue003", "\ue004"],
)

#: SentencePiece silently skips training sentences longer than this many bytes (its
#: default ``max_sentence_length``); :func:`training_sentences` keeps lines below it.
MAX_SENTENCE_BYTES = 4192


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


def training_sentences(texts: Iterable[str]) -> Iterator[str]:
    """Documents as SentencePiece training sentences: one per non-empty line.

    NUL becomes a space and lines are stripped (as the challenge's exporter does per
    document). Documents are fed line by line because SentencePiece drops any sentence
    over :data:`MAX_SENTENCE_BYTES`; longer lines are cut at spaces, so no text is lost.
    """
    for text in texts:
        for line in text.replace("\x00", " ").splitlines():
            line = line.strip()
            while len(line.encode("utf-8")) > MAX_SENTENCE_BYTES:
                head, line = _cut_line(line)
                if head:
                    yield head
            if line:
                yield line


def _cut_line(line: str) -> tuple[str, str]:
    """Split ``line`` into a head of at most MAX_SENTENCE_BYTES bytes (at a space if any) and the rest."""
    prefix = line.encode("utf-8")[:MAX_SENTENCE_BYTES].decode("utf-8", errors="ignore")
    space = prefix.rfind(" ")
    if space > 0:
        prefix = prefix[:space]
    return prefix.strip(), line[len(prefix):].strip()


def sentencepiece_error(message: str, out_path) -> str:
    """One line for SentencePiece's training error: a too-small vocabulary says what size would work."""
    small = re.search(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)", message)
    if small:
        need = int(small.group(2))
        return (f"a vocabulary of {small.group(1)} pieces is too small for this text: it needs at least {need} "
                f"(its characters plus the control pieces); use --vocab-size {need} or more")
    lines = message.strip().splitlines() or ["unknown error"]
    return f"{out_path}: SentencePiece training failed: {lines[-1]}"


def train_tokenizer(texts: Iterable[str], out_path: str | os.PathLike, vocab_size: int = 1024, **overrides) -> None:
    """Train a BPE tokenizer with the official settings and write it to ``out_path``.

    ``texts`` are documents (see :func:`training_sentences`). One training thread, all
    sentences, no sampling: the same texts give a byte-identical model. Written
    atomically. Raises PgolfError when SentencePiece rejects the input (e.g. too little
    text for the vocabulary size).
    """
    import sentencepiece as spm

    from pgolf.fileio import atomic_write_bytes

    model = io.BytesIO()
    options = {**OFFICIAL_TRAINER_OPTIONS, "vocab_size": vocab_size, "num_threads": 1, **overrides}
    sentences = training_sentences(texts)
    first = next(sentences, None)
    if first is None:
        raise PgolfError(f"{out_path}: no text to train the tokenizer on")
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=itertools.chain([first], sentences), model_writer=model, minloglevel=2, **options
        )
    except RuntimeError as e:
        raise PgolfError(sentencepiece_error(str(e), out_path)) from None
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


def surface_bytes(sp) -> np.ndarray:
    """int64[V]: UTF-8 bytes of the text each piece stands for in the tokenized string.

    "▁" is one space byte, a byte-fallback piece one byte, control/unknown pieces 0. The
    spans of a document's tokens tile its (normalized) text when nothing is unknown.
    """
    v = sp.vocab_size()
    out = np.zeros(v, dtype=np.int64)
    for i in range(v):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            continue
        out[i] = 1 if sp.is_byte(i) else len(sp.id_to_piece(i).replace(SPACE_MARK, " ").encode("utf-8"))
    return out


def byte_tables(path: str | os.PathLike) -> ByteTables:
    """Load a tokenizer file and build its byte tables."""
    return ByteTables.from_tokenizer(load_tokenizer(path))


def count_bytes(tokens: np.ndarray, tables: ByteTables) -> int:
    """Bytes over targets ``tokens[1:]`` (functional form of ByteTables.count_bytes)."""
    return tables.count_bytes(tokens)
