"""Tokenizer fingerprints: is the tokenizer in use the one the data (and the model) were built with?

Bits per byte divide by the bytes the *tokenizer* says each token spans, so a different
tokenizer of the same size silently changes val_bpb at an identical val_loss, and a smaller
one crashes at the first evaluation. :func:`check_tokenizer` runs before ``pgolf train``,
``run``, ``eval`` and ``data check`` touch a model:

* the **vocabulary bound** (never overridable): the data's ids (``build.json``'s
  ``vocab_size``, and the largest id of the validation shards) must be below the tokenizer's
  vocabulary, and the model's ``vocab_size`` must equal it;
* the **fingerprint**: the tokenizer's sha256 must equal the data's reference, which is
  ``DATA/build.json``'s ``tokenizer_sha256`` (written by ``pgolf data build``), else the sha256
  of ``DATA/tokenizer.model`` (``pgolf data fineweb`` puts it there), else unknown (not checked);
  and, for a trained run, the sha256 of the tokenizer file the run recorded in ``config.json``.

A failure is one line, :class:`TokenizerMismatch`, exit 2. ``allow_mismatch=True``
(``--allow-tokenizer-mismatch``) turns a fingerprint mismatch into a returned note.

    note = check_tokenizer("data/mine", "data/mine/tokenizer.model", model_vocab=1024)
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from pgolf.errors import PgolfError

#: The flag that turns a fingerprint mismatch into a note.
OVERRIDE = "--allow-tokenizer-mismatch"


class TokenizerMismatch(PgolfError):
    """The tokenizer does not belong to the data or the model: a usage error, exit code 2."""

    exit_code = 2


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _build_info(data_dir: Path) -> dict:
    try:
        info = json.loads((data_dir / "build.json").read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def data_fingerprint(data_dir: str | os.PathLike) -> tuple[str, str] | None:
    """(sha256, where it comes from) of the tokenizer ``data_dir`` was built with, or None."""
    d = Path(data_dir)
    sha = _build_info(d).get("tokenizer_sha256")
    if isinstance(sha, str) and sha:
        return sha, str(d / "build.json")
    if (d / "tokenizer.model").is_file():
        return sha256_file(d / "tokenizer.model"), str(d / "tokenizer.model")
    return None


def max_token_id(data_dir: str | os.PathLike) -> int:
    """The largest token id of the validation shards (-1 when they are empty)."""
    from pgolf.data.shards import find_shards, read_shard

    top = -1
    for path in find_shards(data_dir, "val"):
        tokens = read_shard(path)
        if len(tokens):
            top = max(top, int(tokens.max()))
    return top


def _check_bound(data_dir: Path, tokenizer: Path, vocab: int, model_vocab: int | None) -> None:
    built = _build_info(data_dir).get("vocab_size")
    if isinstance(built, int) and built > vocab:
        raise TokenizerMismatch(f"{tokenizer}: vocabulary of {vocab} pieces, but {data_dir} was built with "
                                f"{built}; pass the data's own tokenizer (--tokenizer)")
    top = max_token_id(data_dir)
    if top >= vocab:
        raise TokenizerMismatch(f"{tokenizer}: vocabulary of {vocab} pieces, but {data_dir}'s validation ids "
                                f"reach {top}; pass the data's own tokenizer (--tokenizer)")
    if model_vocab is not None and model_vocab != vocab:
        raise TokenizerMismatch(f"{tokenizer}: vocabulary of {vocab} pieces does not match the model's "
                                f"vocab_size {model_vocab} (--set model.vocab_size={vocab}, or another --tokenizer)")


def check_tokenizer(data_dir: str | os.PathLike, tokenizer: str | os.PathLike, *, model_vocab: int | None = None,
                    run_tokenizer: str | os.PathLike | None = None, allow_mismatch: bool = False) -> str | None:
    """Check ``tokenizer`` against ``data_dir`` (and a run's recorded ``run_tokenizer``) before any
    training or evaluation. None when all agree; a note when ``allow_mismatch`` let a fingerprint
    mismatch through; :class:`TokenizerMismatch` otherwise (the bound is never overridable)."""
    from pgolf.data.tokenizer import load_tokenizer

    data, tok = Path(data_dir), Path(tokenizer)
    _check_bound(data, tok, load_tokenizer(tok).vocab_size(), model_vocab)
    sha = sha256_file(tok)
    refs = [data_fingerprint(data)]
    if run_tokenizer is not None and Path(run_tokenizer).is_file():
        refs.append((sha256_file(run_tokenizer), f"{run_tokenizer} (the run's tokenizer)"))
    for ref in refs:
        if ref is not None and ref[0] != sha:
            what = (f"{tok} is not the tokenizer recorded by {ref[1]} (sha256 {sha[:12]}... vs {ref[0][:12]}...): "
                    "bits per byte would be counted with other pieces")
            if allow_mismatch:
                return f"pgolf: warning: {what}; going on ({OVERRIDE})"
            raise TokenizerMismatch(f"{what}; pass the data's tokenizer, or {OVERRIDE} to use it anyway")
    return None
