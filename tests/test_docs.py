"""The repository's documents point only at things that exist, and every module is documented.

README.md and docs/*.md: every relative markdown link names a file of the repository; every
bare mention of a ``NAME.md`` (as the code and README cite "DESIGN.md §4") names a file in
docs/ or the root; every dotted ``pgolf.x.y`` name is a module or package (or an attribute
of one) and every ``pgolf/…``, ``tests/…``, ``benchmarks/…``, ``docs/…`` path exists. Every
module of the package has a docstring whose first paragraph says what it does. Each checker
is also run on a text with a broken reference, so it can fail. Run:
``python -m pytest -q tests/test_docs.py``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
_MD_NAME = re.compile(r"(?<![\w/.\-\[])([A-Z][A-Z_]*\.md)\b")
_DOTTED = re.compile(r"(?<![\w.])pgolf(?:\.[a-z_][a-z0-9_]*)+")
_PATH = re.compile(r"(?<![\w./~\-])(?:pgolf|tests|benchmarks|docs)/[A-Za-z0-9_./\-]*[A-Za-z0-9_]")


def broken_links(text: str, base: Path) -> list[str]:
    """Relative link targets in ``text`` (a markdown file in ``base``) that do not exist."""
    bad = []
    for target in _LINK.findall(text):
        if "://" in target or target.startswith("mailto:"):
            continue
        if not (base / target).exists():
            bad.append(target)
    return bad


def missing_md_names(text: str) -> list[str]:
    """Bare ``NAME.md`` mentions that are neither in docs/ nor at the repository root."""
    return [n for n in set(_MD_NAME.findall(text))
            if not (ROOT / "docs" / n).exists() and not (ROOT / n).exists()]


def _resolves(dotted: str) -> bool:
    """The longest module prefix exists and the next part, if any, is named in its source."""
    parts = dotted.split(".")
    for k in range(len(parts), 0, -1):
        p = ROOT.joinpath(*parts[:k])
        source = p.with_suffix(".py") if p.with_suffix(".py").exists() else p / "__init__.py"
        if not source.exists():
            continue
        if k == len(parts):
            return True
        return re.search(rf"\b{parts[k]}\b", source.read_text(encoding="utf-8")) is not None
    return False


def missing_code_names(text: str) -> list[str]:
    """Dotted ``pgolf.…`` names and repository paths in ``text`` that name nothing."""
    bad = [m for m in set(_DOTTED.findall(text)) if not _resolves(m)]
    bad += [m for m in set(_PATH.findall(text)) if not (ROOT / m).exists()]
    return bad


def test_markdown_references_exist():
    problems = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for kind, found in (("link", broken_links(text, doc.parent)),
                            ("doc", missing_md_names(text)),
                            ("code", missing_code_names(text))):
            problems += [f"{doc.relative_to(ROOT)}: {kind} {x}" for x in sorted(found)]
    assert problems == []


def test_code_cites_only_documents_in_the_repository():
    problems = []
    for path in sorted((ROOT / "pgolf").rglob("*.py")):
        for name in missing_md_names(path.read_text(encoding="utf-8")):
            problems.append(f"{path.relative_to(ROOT)}: {name}")
    assert problems == []


def test_design_and_facts_are_in_the_repository():
    for name in ("DESIGN.md", "FACTS.md", "ARCHITECTURE.md", "ARTIFACT.md"):
        assert (ROOT / "docs" / name).is_file(), name
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(docs/DESIGN.md)" in readme and "(docs/FACTS.md)" in readme


def test_checkers_fail_on_broken_references():
    text = ("see [x](docs/NOPE.md), PLAN.md §3, pgolf.quant.artifact_old and "
            "pgolf/quant/schemes.py; fine: [d](docs/DESIGN.md) pgolf.quant.format")
    assert broken_links(text, ROOT) == ["docs/NOPE.md"]
    assert missing_md_names(text) == ["PLAN.md"]
    assert sorted(missing_code_names(text)) == ["docs/NOPE.md", "pgolf.quant.artifact_old",
                                                "pgolf/quant/schemes.py"]


def first_paragraph(source: str) -> str:
    """The first paragraph of a module's docstring ('' when it has none)."""
    doc = ast.get_docstring(ast.parse(source)) or ""
    return doc.strip().split("\n\n")[0].strip()


def test_every_module_has_a_docstring():
    missing = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "pgolf").rglob("*.py"))
               if len(first_paragraph(p.read_text(encoding="utf-8")).split()) < 3]
    assert missing == []
    assert first_paragraph("import os\n") == ""
