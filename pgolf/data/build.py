"""Build a dataset from text: documents → SentencePiece tokenizer → challenge shards.

Inputs are ``.jsonl`` files (one JSON object per line; its ``"text"`` field is a
document) and ``.txt`` files (by default the whole file is one document; with
``txt_docs="paragraphs"`` blank lines separate documents, with ``"lines"`` every line is
one). Directories are searched (sorted, recursively) for both. Documents that are empty
after stripping whitespace are skipped and counted.

The first ``val_docs`` documents form the validation split, the rest the training split.
Unless a tokenizer is given, one is trained with the official sp1024 settings on the
*training* documents only. Each document is stored as ``[BOS] + encode(text)`` (the
challenge's layout); shards hold at most ``shard_tokens`` tokens and a document may run
on into the next shard. With ``caseops="v1"`` the text is CaseOps-transformed
(:mod:`pgolf.data.caseops`) before the tokenizer sees it, the tokenizer is trained
without normalization and with the four controls reserved, and beside each shard a
per-token byte file (:mod:`pgolf.data.sidecar`) records each token's original UTF-8
bytes, so bits per byte stay on the original text. Everything is written into a hidden staging folder beside the
output and renamed into place at the end, so a failure leaves nothing half-written.

    pgolf data build --text docs.jsonl --out data/mine --val-docs 50
    build_from_paths(["docs.jsonl"], "data/mine", val_docs=50)
"""

from __future__ import annotations

import glob
import hashlib
import itertools
import json
import os
import re
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from pgolf.data.caseops import CONTROLS as CASEOPS_CONTROLS
from pgolf.data.caseops import VERSIONS as CASEOPS_VERSIONS
from pgolf.data.caseops import encode as caseops_encode
from pgolf.data.caseops import original_byte_weights
from pgolf.data.progress import progress
from pgolf.data.shards import SPLITS, shard_name, write_shard
from pgolf.data.sidecar import sidecar_name, token_byte_counts
from pgolf.data.tokenizer import BOS_ID, CASEOPS_TRAINER_OPTIONS, load_tokenizer, surface_bytes, train_tokenizer
from pgolf.errors import PgolfError
from pgolf.fileio import atomic_write_json

DEFAULT_SHARD_TOKENS = 100_000_000  # the challenge's shard size
TXT_MODES = ("file", "paragraphs", "lines")
TOKENIZER_FILE = "tokenizer.model"
BUILD_INFO_FILE = "build.json"
ENCODE_BATCH = 256  # documents per SentencePiece batch call

#: Files a data directory may hold; --force only replaces folders made of these.
_DATA_FILE = re.compile(r"^(fineweb_(train|val)_(bytes_)?\d+\.bin|tokenizer\.(model|vocab)|build\.json|manifest\.json|\..*)$")


# ----------------------------------------------------------------------------- reading text


def input_files(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Expand files and directories into a list of .txt/.jsonl files (directories sorted)."""
    files: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix in (".txt", ".jsonl"))
            if not found:
                raise PgolfError(f"{p}: directory has no .txt or .jsonl files")
            files.extend(found)
        elif not p.is_file():
            raise PgolfError(f"{p}: text file not found")
        elif p.suffix not in (".txt", ".jsonl"):
            raise PgolfError(f"{p}: unsupported file type {p.suffix or '(none)'} (expected .txt or .jsonl)")
        else:
            files.append(p)
    return files


def _read_jsonl(path: Path) -> Iterator[str]:
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise PgolfError(f"{path}:{lineno}: not valid JSON ({e})") from None
            text = obj.get("text") if isinstance(obj, dict) else None
            if not isinstance(text, str):
                raise PgolfError(f'{path}:{lineno}: expected an object with a string "text" field')
            yield text


def _read_txt(path: Path, mode: str) -> Iterator[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise PgolfError(f"{path}: not UTF-8 text (byte {e.start})") from None
    if mode == "file":
        yield text
    elif mode == "paragraphs":
        yield from re.split(r"\n[ \t\r\f\v]*\n", text)
    else:
        yield from text.splitlines()


def iter_documents(paths: Sequence[str | os.PathLike], txt_docs: str = "file") -> Iterator[str]:
    """Every document of the input files, in order (empty ones included)."""
    if txt_docs not in TXT_MODES:
        raise PgolfError(f"txt_docs={txt_docs!r}: expected one of {', '.join(TXT_MODES)}")
    for path in input_files(paths):
        try:
            yield from (_read_jsonl(path) if path.suffix == ".jsonl" else _read_txt(path, txt_docs))
        except OSError as e:
            raise PgolfError(f"{path}: cannot read ({e.strerror or e})") from None


# ----------------------------------------------------------------------------- writing shards


class ShardWriter:
    """Accumulates one split's tokens and writes shards of at most ``shard_tokens`` tokens.

    ``name(split, index)`` names the files (shards, or their per-token byte files).
    """

    def __init__(self, out_dir: Path, split: str, shard_tokens: int, name=shard_name) -> None:
        self.out_dir, self.split, self.cap, self.name = out_dir, split, shard_tokens, name
        self.chunks: list[np.ndarray] = []
        self.fill = self.files = self.tokens = self.docs = 0

    def add(self, tokens: np.ndarray) -> None:
        """Append one document's tokens (it may run on into the next shard)."""
        self.docs += 1
        self.tokens += len(tokens)
        while len(tokens):
            take = min(len(tokens), self.cap - self.fill)
            self.chunks.append(tokens[:take])
            self.fill += take
            tokens = tokens[take:]
            if self.fill == self.cap:
                self.flush()

    def flush(self) -> None:
        """Write the pending tokens (if any) as the next shard."""
        if self.fill:
            write_shard(self.out_dir / self.name(self.split, self.files), np.concatenate(self.chunks))
            self.files += 1
            self.fill = 0
            self.chunks = []

    def summary(self) -> dict:
        return {"files": self.files, "tokens": self.tokens, "docs": self.docs}


@contextmanager
def staged_output(out_dir: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder; on success it replaces ``out_dir`` in one rename."""
    out = Path(out_dir).expanduser().absolute()
    _check_replaceable(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-{os.getpid()}-", dir=out.parent))
    try:
        yield tmp
        _default_permissions(tmp)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-{os.getpid()}-", dir=out.parent))
            os.replace(out, old / "data")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


#: A staging folder without a pid in its name (older pgolf) counts as stale after this long.
STALE_STAGING_S = 3600.0


def _staging_pid(name: str, prefix: str) -> int | None:
    """The builder's pid in ``.NAME.building-PID-XXXX``, None when the name carries none."""
    head = name[len(prefix):].split("-", 1)[0]
    return int(head) if head.isdigit() and "-" in name[len(prefix):] else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_staging(out: Path) -> list[Path]:
    """Remove the staging folders of ``out`` that a killed build left (its pid is dead, or the
    name has no pid and it is older than :data:`STALE_STAGING_S`); one stderr line each."""
    removed = []
    for kind in ("building", "old"):
        prefix = f".{out.name}.{kind}-"
        for folder in sorted(out.parent.glob(glob.escape(prefix) + "*")):
            if not folder.is_dir():
                continue
            pid = _staging_pid(folder.name, prefix)
            if pid is not None and _pid_alive(pid):
                continue
            if pid is None and time.time() - folder.stat().st_mtime < STALE_STAGING_S:
                continue
            why = f"pid {pid} no longer running" if pid is not None else "older than an hour"
            shutil.rmtree(folder, ignore_errors=True)
            print(f"pgolf: removed {folder}, left by a build that did not finish ({why})", file=sys.stderr)
            removed.append(folder)
    return removed


def _default_permissions(folder: Path) -> None:
    """Give the staged folder and its files the usual umask permissions (mkstemp makes them private)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for p in folder.iterdir():
        if p.is_file():
            os.chmod(p, 0o666 & ~umask)


def _check_replaceable(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise PgolfError(f"{out}: exists and is not a directory")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not force:
        raise PgolfError(f"{out}: directory is not empty; pass --force to replace its dataset")
    foreign = [p.name for p in out.iterdir() if not _DATA_FILE.match(p.name)]
    if foreign:
        raise PgolfError(f"{out}: refusing to replace a folder holding non-dataset files ({foreign[0]})")


# ----------------------------------------------------------------------------- the build


@dataclass
class BuildResult:
    """What a build wrote (also saved as ``build.json`` in the output folder)."""

    out_dir: Path
    tokenizer_sha256: str
    tokenizer_trained: bool
    vocab_size: int
    splits: dict = field(default_factory=dict)  # split -> {"files", "tokens", "docs"}
    text_bytes: int = 0
    empty_docs: int = 0
    seconds: float = 0.0
    caseops: str | None = None  # "v1" when the text was CaseOps-transformed (byte files written)

    def info(self, extra: dict | None = None) -> dict:
        return {
            "format": 1,
            "vocab_size": self.vocab_size,
            "tokenizer_sha256": self.tokenizer_sha256,
            "tokenizer_trained": self.tokenizer_trained,
            "text_bytes": self.text_bytes,
            "empty_docs": self.empty_docs,
            "caseops": self.caseops,
            "splits": self.splits,
            **(extra or {}),
        }


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _nonempty(docs: Iterable[str], skipped: list[int]) -> Iterator[str]:
    for text in docs:
        if text.strip():
            yield text
        else:
            skipped[0] += 1


def build_dataset(
    documents: Callable[[], Iterable[str]],
    out_dir: str | os.PathLike,
    *,
    val_docs: int,
    vocab_size: int | None = None,
    tokenizer: str | os.PathLike | None = None,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    force: bool = False,
    info: dict | None = None,
    show_progress: bool = True,
    caseops: str | None = None,
) -> BuildResult:
    """Tokenize ``documents()`` (called once or twice) into ``out_dir``; see the module docstring."""
    if caseops is not None and caseops not in CASEOPS_VERSIONS:
        raise PgolfError(f"--caseops {caseops}: unknown version (expected one of {', '.join(CASEOPS_VERSIONS)})")
    if caseops:
        plain = documents
        documents = lambda: map(caseops_encode, plain())  # noqa: E731 - same iterable contract
    if val_docs < 0:
        raise PgolfError(f"val_docs={val_docs}: must be >= 0")
    if shard_tokens < 1:
        raise PgolfError(f"shard_tokens={shard_tokens}: must be >= 1")
    start = time.monotonic()
    with staged_output(out_dir, force) as stage:
        tok_path = stage / TOKENIZER_FILE
        trained = tokenizer is None
        if trained:
            _train(documents, tok_path, val_docs, vocab_size or 1024, show_progress, CASEOPS_TRAINER_OPTIONS if caseops else {})
        else:
            _copy_tokenizer(Path(tokenizer), tok_path, vocab_size)
        sp = load_tokenizer(tok_path)
        if caseops:
            _check_caseops_tokenizer(sp, tok_path)
        result = BuildResult(Path(out_dir), sha256_file(tok_path), trained, sp.vocab_size(), caseops=caseops)
        _encode_all(sp, documents, stage, val_docs, shard_tokens, result, show_progress)
        result.seconds = time.monotonic() - start
        atomic_write_json(stage / BUILD_INFO_FILE, result.info(info))
    return result


def _train(documents, tok_path: Path, val_docs: int, vocab_size: int, show_progress: bool, options: dict) -> None:
    if show_progress:
        print(f"training a {vocab_size}-piece SentencePiece BPE tokenizer on the training documents ...", file=sys.stderr)
    skipped = [0]
    train_docs = (t for i, t in enumerate(_nonempty(documents(), skipped)) if i >= val_docs)
    first = next(train_docs, None)
    if first is None:
        raise PgolfError(f"no training documents to train the tokenizer on (--val-docs {val_docs} takes them all)")
    train_tokenizer(itertools.chain([first], train_docs), tok_path, vocab_size, **options)


def _check_caseops_tokenizer(sp, path: Path) -> None:
    """A CaseOps build needs a tokenizer with the four controls as single user-defined pieces."""
    for ch in CASEOPS_CONTROLS:
        i = sp.piece_to_id(ch)
        if i == sp.unk_id() or sp.encode(ch + ch) != [i, i]:
            raise PgolfError(f"{path}: not a CaseOps tokenizer (control U+{ord(ch):04X} is not a user-defined piece)")


def _copy_tokenizer(src: Path, dst: Path, vocab_size: int | None) -> None:
    sp = load_tokenizer(src)
    if vocab_size is not None and sp.vocab_size() != vocab_size:
        raise PgolfError(f"{src}: tokenizer has {sp.vocab_size()} pieces but --vocab-size is {vocab_size}")
    shutil.copyfile(src, dst)


def _encode_all(sp, documents, stage: Path, val_docs: int, shard_tokens: int, result: BuildResult, show_progress: bool) -> None:
    if sp.vocab_size() > 65536:
        raise PgolfError(f"tokenizer has {sp.vocab_size()} pieces; shards store uint16 ids (at most 65536)")
    writers = {s: ShardWriter(stage, s, shard_tokens) for s in SPLITS}
    if result.caseops:
        writers.update({f"{s}_bytes": ShardWriter(stage, s, shard_tokens, sidecar_name) for s in SPLITS})
    surface = surface_bytes(sp) if result.caseops else None
    skipped = [0]
    batch: list[str] = []
    index = 0
    with progress(desc="encode", unit="doc", enabled=show_progress) as bar:
        for text in _nonempty(documents(), skipped):
            batch.append(text)
            if len(batch) == ENCODE_BATCH:
                index = _encode_batch(sp, batch, index, val_docs, writers, result, surface)
                bar.update(len(batch))
                batch = []
        if batch:
            index = _encode_batch(sp, batch, index, val_docs, writers, result, surface)
            bar.update(len(batch))
    for w in writers.values():
        w.flush()
    if index == 0:
        raise PgolfError("the input has no non-empty documents")
    if index <= val_docs:
        raise PgolfError(f"only {index} non-empty documents; --val-docs {val_docs} leaves none for training")
    result.empty_docs = skipped[0]
    result.splits = {s: writers[s].summary() for s in ("val", "train")}


def _encode_batch(sp, batch: list[str], index: int, val_docs: int, writers: dict, result: BuildResult, surface) -> int:
    """Encode documents; with ``surface`` (CaseOps) also write each token's original byte count."""
    for text, ids in zip(batch, sp.encode(batch)):
        tokens = np.empty(len(ids) + 1, dtype=np.uint16)
        tokens[0] = BOS_ID
        tokens[1:] = ids
        split = "val" if index < val_docs else "train"
        writers[split].add(tokens)
        if surface is None:
            result.text_bytes += len(text.encode("utf-8"))
        else:
            counts = np.zeros(len(tokens), dtype=np.uint16)  # BOS counts 0
            counts[1:] = token_byte_counts(ids, surface, original_byte_weights(text))
            writers[f"{split}_bytes"].add(counts)
            result.text_bytes += int(counts.sum())
        index += 1
    return index


def build_from_paths(paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *, txt_docs: str = "file", **kwargs) -> BuildResult:
    """:func:`build_dataset` over the documents of .txt/.jsonl files (see the module docstring)."""
    input_files(paths)  # fail early on missing/unsupported inputs
    sources = [str(p) for p in paths]
    return build_dataset(lambda: iter_documents(paths, txt_docs), out_dir, info={"source": sources, "txt_docs": txt_docs}, **kwargs)


def format_summary(result: BuildResult) -> str:
    """A short human-readable summary of a build."""
    how = "trained" if result.tokenizer_trained else "given"
    lines = [
        f"built {result.out_dir} in {result.seconds:.1f} s",
        f"  tokenizer: {how}, vocab {result.vocab_size}, sha256 {result.tokenizer_sha256[:16]}…",
        f"  text: {result.text_bytes:,} bytes; {result.empty_docs} empty documents skipped",
    ]
    for split in ("val", "train"):
        s = result.splits[split]
        lines.append(f"  {split:5s}: {s['files']} files, {s['tokens']:,} tokens, {s['docs']:,} documents")
    return "\n".join(lines)
