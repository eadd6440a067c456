"""The embedded default corpus: documentation text that every Python installation carries.

Documents are (1) one per standard-library module: the module, class and function
docstrings of its source file, each under a header line with its qualified name, read
with ``ast`` (nothing is imported or executed; test suites, idlelib, turtledemo and
site-packages are left out), and (2) one per ``pydoc`` help topic
(``pydoc_data.topics.topics``, a plain data module). Documents are sorted by name, so
the text is deterministic for a given Python installation; every tenth document
(:data:`VAL_EVERY`) is validation, the rest training. The dataset is then built like any
other text (:mod:`pgolf.data.build`): an sp1024 tokenizer trained on the training part,
``[BOS] + encode(text)`` per document, challenge-format shards.

The result is cached in ``~/.cache/pgolf/default-<python version>-<fingerprint>`` (or
``$PGOLF_CACHE_DIR``, or ``$XDG_CACHE_HOME/pgolf``); the fingerprint covers the Python
version, the list and sizes of the source files, the corpus format and the tokenizer
settings, and a cached folder is reused only if its ``build.json`` matches and every
shard validates. Works offline.

    data_dir = ensure_default_data()           # build once, then reuse
    pgolf data build --default --out DIR       # the same, into DIR
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import platform
import sys
import sysconfig
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from pgolf.data.build import BUILD_INFO_FILE, BuildResult, build_dataset
from pgolf.data.tokenizer import OFFICIAL_TRAINER_OPTIONS
from pgolf.errors import PgolfError, ShardError

CORPUS_VERSION = 1  # bump when the extraction or split changes
VAL_EVERY = 10  # documents 0, 10, 20, ... (in sorted order) are validation
VOCAB_SIZE = 1024
MIN_TEXT_BYTES = 500_000  # below this the installation lacks its sources; refuse
SKIP_PARTS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test", "idlelib", "turtledemo", "__pycache__"})
_DEFS = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def stdlib_root() -> Path:
    """The folder of the running interpreter's standard library sources."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_sources(root: Path | None = None) -> list[Path]:
    """The standard library's ``.py`` files, sorted, without tests and tools."""
    root = root or stdlib_root()
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIP_PARTS]
        found.extend(Path(folder, f) for f in files if f.endswith(".py"))
    return sorted(found, key=lambda p: p.relative_to(root).parts)


def module_name(path: Path, root: Path) -> str:
    """Dotted module name of a source file (``json/__init__.py`` → ``json``)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _docstrings(node: ast.AST, prefix: str) -> Iterator[tuple[str, str, str]]:
    """(kind, qualified name, docstring) for every documented def/class below ``node``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, _DEFS):
            name = f"{prefix}{child.name}"
            doc = ast.get_docstring(child)
            if doc:
                yield ("class" if isinstance(child, ast.ClassDef) else "def"), name, doc
            yield from _docstrings(child, name + ".")
        elif not isinstance(child, (ast.expr, ast.Lambda)):
            yield from _docstrings(child, prefix)


def module_document(path: Path, root: Path) -> str | None:
    """The docstring document of one source file, or None if it has none (or does not parse)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, OSError):
        return None
    name = module_name(path, root)
    parts = []
    doc = ast.get_docstring(tree)
    if doc:
        parts.append(f"Module {name}\n\n{doc}")
    for kind, qual, doc in _docstrings(tree, ""):
        parts.append(f"{kind} {name}.{qual}\n\n{doc}")
    return "\n\n".join(parts) if parts else None


def topic_documents() -> list[tuple[str, str]]:
    """(name, text) for each pydoc help topic."""
    from pydoc_data.topics import topics

    return [(f"topic {key}", f"Help topic {key}\n\n{text.strip()}") for key, text in sorted(topics.items()) if text.strip()]


def default_documents(root: Path | None = None, show_progress: bool = False) -> list[tuple[str, str]]:
    """Every (name, text) document of the default corpus, sorted by name."""
    from pgolf.data.progress import progress

    root = root or stdlib_root()
    sources = stdlib_sources(root)
    docs = []
    with progress(len(sources), "read stdlib docstrings", "file", show_progress) as bar:
        for p in sources:
            text = module_document(p, root)
            if text:
                docs.append((f"module {module_name(p, root)}", text))
            bar.update(1)
    return sorted(docs + topic_documents())


def split_documents(docs: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """(validation texts, training texts): every VAL_EVERY-th document is validation."""
    val = [t for i, (_, t) in enumerate(docs) if i % VAL_EVERY == 0]
    train = [t for i, (_, t) in enumerate(docs) if i % VAL_EVERY != 0]
    return val, train


def fingerprint(root: Path | None = None) -> str:
    """A short hash of everything the default dataset depends on (cheap: file sizes, not contents)."""
    root = root or stdlib_root()
    h = hashlib.sha256()
    h.update(json.dumps([CORPUS_VERSION, VAL_EVERY, VOCAB_SIZE, sorted(OFFICIAL_TRAINER_OPTIONS.items())]).encode())
    h.update(f"{platform.python_implementation()} {sys.version}".encode())
    import pydoc_data.topics

    for p in stdlib_sources(root) + [Path(pydoc_data.topics.__file__)]:
        h.update(f"{p.relative_to(root) if p.is_relative_to(root) else p.name}\0{p.stat().st_size}\n".encode())
    return h.hexdigest()[:12]


def cache_root() -> Path:
    """Where cached datasets live: $PGOLF_CACHE_DIR, else $XDG_CACHE_HOME/pgolf, else ~/.cache/pgolf."""
    if os.environ.get("PGOLF_CACHE_DIR"):
        return Path(os.environ["PGOLF_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "pgolf"


def default_cache_dir() -> Path:
    """The cache folder for this interpreter's default dataset."""
    v = sys.version_info
    return cache_root() / f"default-{v.major}.{v.minor}-{fingerprint()}"


def build_default(out_dir: str | os.PathLike, force: bool = False, show_progress: bool = True) -> BuildResult:
    """Extract the default corpus and build it into ``out_dir`` (see the module docstring)."""
    start = time.monotonic()
    docs = default_documents(show_progress=show_progress)
    val, train = split_documents(docs)
    text = "".join(t for _, t in docs).encode("utf-8")
    if len(text) < MIN_TEXT_BYTES:
        raise PgolfError(f"{stdlib_root()}: only {len(text):,} bytes of documentation found; this Python lacks its standard library sources")
    info = {
        "source": "default",
        "corpus_version": CORPUS_VERSION,
        "python": sys.version.split()[0],
        "fingerprint": fingerprint(),
        "text_sha256": hashlib.sha256(text).hexdigest(),
        "documents": len(docs),
    }
    result = build_dataset(lambda: val + train, out_dir, val_docs=len(val), vocab_size=VOCAB_SIZE, force=force, info=info, show_progress=show_progress)
    result.seconds = time.monotonic() - start
    return result


def is_valid_default(data_dir: Path) -> bool:
    """True if ``data_dir`` holds a complete default dataset for this interpreter."""
    from pgolf.data.stats import check_dataset

    try:
        info = json.loads((data_dir / BUILD_INFO_FILE).read_text(encoding="utf-8"))
        if info.get("source") != "default" or info.get("fingerprint") != fingerprint():
            return False
        check_dataset(data_dir, info["vocab_size"])
        return (data_dir / "tokenizer.model").is_file()
    except (OSError, ValueError, KeyError, ShardError):
        return False


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive inter-process lock (POSIX); a no-op where fcntl is missing."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_default_data(out_dir: str | os.PathLike | None = None, show_progress: bool = True) -> Path:
    """The folder of the default dataset, building it first unless a valid one is there.

    Without ``out_dir`` the per-interpreter cache folder is used. Safe to call from
    several processes at once (they wait for one build).
    """
    target = Path(out_dir).expanduser() if out_dir is not None else default_cache_dir()
    if is_valid_default(target):
        return target
    with _lock(target.parent / f".{target.name}.lock"):
        if not is_valid_default(target):
            build_default(target, force=True, show_progress=show_progress)
    return target
