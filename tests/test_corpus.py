"""The embedded default corpus: extraction, determinism, split, cache reuse."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from pgolf.data import corpus
from pgolf.data.corpus import (
    VAL_EVERY,
    default_documents,
    ensure_default_data,
    fingerprint,
    is_valid_default,
    module_document,
    split_documents,
    stdlib_root,
    stdlib_sources,
    topic_documents,
)
from pgolf.data.shards import load_tokens


@pytest.fixture
def fake_stdlib(tmp_path) -> Path:
    root = tmp_path / "lib"
    files = {
        "alpha.py": '''
            """Alpha module docstring."""
            class Thing:
                """A thing."""
                def method(self):
                    """Does it."""
                    def inner():
                        """Inner helper."""
            if True:
                async def coro():
                    """A coroutine."""
            x = lambda: None
        ''',
        "pkg/__init__.py": '"""The package."""\n',
        "pkg/nodoc.py": "x = 1\n",
        "broken.py": "def (:\n",
        "test/test_alpha.py": '"""A test module: skipped."""\n',
        "site-packages/extra.py": '"""Third-party: skipped."""\n',
        "idlelib/editor.py": '"""IDLE: skipped."""\n',
    }
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text), encoding="utf-8")
    return root


def test_module_document_collects_qualified_docstrings(fake_stdlib):
    doc = module_document(fake_stdlib / "alpha.py", fake_stdlib)
    assert doc == (
        "Module alpha\n\nAlpha module docstring.\n\n"
        "class alpha.Thing\n\nA thing.\n\n"
        "def alpha.Thing.method\n\nDoes it.\n\n"
        "def alpha.Thing.method.inner\n\nInner helper.\n\n"
        "def alpha.coro\n\nA coroutine."
    )
    assert module_document(fake_stdlib / "broken.py", fake_stdlib) is None
    assert module_document(fake_stdlib / "pkg" / "nodoc.py", fake_stdlib) is None


def test_sources_skip_tests_tools_and_site_packages(fake_stdlib):
    rel = [p.relative_to(fake_stdlib).as_posix() for p in stdlib_sources(fake_stdlib)]
    assert rel == ["alpha.py", "broken.py", "pkg/__init__.py", "pkg/nodoc.py"]


def test_documents_are_sorted_and_deterministic(fake_stdlib):
    docs = default_documents(fake_stdlib)
    assert docs == default_documents(fake_stdlib)
    names = [n for n, _ in docs]
    assert names == sorted(names)
    assert "module alpha" in names and "module pkg" in names and "module pkg.nodoc" not in names
    topics = topic_documents()
    assert len(topics) > 50 and all(t.startswith("Help topic ") for _, t in topics)
    assert len(docs) == 2 + len(topics)


def test_real_stdlib_extraction_is_deterministic():
    root = stdlib_root()
    for rel in ("json/__init__.py", "json/decoder.py", "textwrap.py"):
        first = module_document(root / rel, root)
        assert first and first == module_document(root / rel, root)
    assert module_document(root / "json/decoder.py", root).startswith("Module json.decoder\n\n")


def test_split_every_tenth_document_is_validation():
    docs = [(f"d{i:03d}", f"text {i}") for i in range(25)]
    val, train = split_documents(docs)
    assert val == ["text 0", "text 10", "text 20"] and len(train) == 22
    assert VAL_EVERY == 10


def test_fingerprint_tracks_sources(fake_stdlib):
    before = fingerprint(fake_stdlib)
    assert fingerprint(fake_stdlib) == before
    (fake_stdlib / "pkg" / "nodoc.py").write_text("x = 12\n")
    assert fingerprint(fake_stdlib) != before


def test_ensure_default_data_builds_once_then_reuses(tmp_path, monkeypatch):
    words = "module function class return value argument default string list object".split()
    docs = [(f"module m{i:03d}", " ".join(words[(i + k) % len(words)] for k in range(200))) for i in range(40)]
    monkeypatch.setattr(corpus, "default_documents", lambda root=None, show_progress=False: docs)
    monkeypatch.setattr(corpus, "MIN_TEXT_BYTES", 1000)
    monkeypatch.setenv("PGOLF_CACHE_DIR", str(tmp_path / "cache"))
    path = ensure_default_data(show_progress=False)
    assert path.parent == tmp_path / "cache" and path.name.startswith("default-")
    assert is_valid_default(path)
    info = json.loads((path / "build.json").read_text())
    assert info["source"] == "default" and info["splits"]["val"]["docs"] == 4 and info["splits"]["train"]["docs"] == 36
    assert len(load_tokens(path, "val")) == info["splits"]["val"]["tokens"]

    def no_rebuild(*a, **k):
        raise AssertionError("rebuilt a valid cache")

    monkeypatch.setattr(corpus, "build_default", no_rebuild)
    assert ensure_default_data(show_progress=False) == path
    (path / "fineweb_val_000000.bin").write_bytes(b"garbage")
    assert not is_valid_default(path)


def test_is_valid_default_rejects_other_folders(tmp_path):
    assert not is_valid_default(tmp_path)
    (tmp_path / "build.json").write_text(json.dumps({"source": "default", "fingerprint": "other", "vocab_size": 1024}))
    assert not is_valid_default(tmp_path)


@pytest.mark.slow
def test_default_build_is_large_enough_and_byte_identical(tmp_path):
    """Acceptance: ≥ 1.5 MB of text, ≥ 400,000 training tokens, two builds byte-identical."""
    a = corpus.build_default(tmp_path / "a", show_progress=False)
    b = corpus.build_default(tmp_path / "b", show_progress=False)
    assert a.text_bytes >= 1_500_000
    assert a.splits["train"]["tokens"] >= 400_000
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert is_valid_default(tmp_path / "a")
    assert ensure_default_data(tmp_path / "a", show_progress=False) == tmp_path / "a"
