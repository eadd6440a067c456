"""One way down: the import graph of pgolf/ has no circle, and no module imports from a layer
above its own in the order docs/ARCHITECTURE.md declares (its ```layers block).

The graph is read with ``ast`` from every ``.py`` file under pgolf/, imports inside
functions included; ``from pkg import name`` counts as an import of ``pkg.name`` when that
is a module, else of ``pkg``. The checks are functions of a graph, so the tests also feed
them a graph with a deliberately added upward import and a circle and watch them fail.
"""

from __future__ import annotations

import ast
import fnmatch
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "pgolf"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _target(node: ast.ImportFrom, name: str, is_pkg: bool) -> str:
    if not node.level:
        return node.module or ""
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str, source: str, modules, is_pkg: bool = False) -> set[str]:
    """pgolf modules that ``source`` (module ``name``) imports anywhere."""
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom):
            target = _target(node, name, is_pkg)
            if not target.startswith("pgolf"):
                continue
            subs = {f"{target}.{a.name}" for a in node.names} & set(modules)
            out |= subs
            if len(subs) < len(node.names) and target in modules:
                out.add(target)
    out.discard(name)
    return out


def import_graph() -> dict[str, set[str]]:
    mods = all_modules()
    return {m: imports_of(m, p.read_text(encoding="utf-8"), mods, p.name == "__init__.py") for m, p in mods.items()}


def declared_layers(text: str) -> list[tuple[str, list[str]]]:
    """``[(layer, [prefix or pattern, ...]), ...]`` bottom to top, from the ```layers block."""
    block = re.search(r"```layers\n(.*?)```", text, re.S)
    assert block, "docs/ARCHITECTURE.md has no ```layers block"
    rows = [line.split(":", 1) for line in block.group(1).strip().splitlines()]
    return [(name.strip(), spec.split()) for name, spec in rows]


def layer_of(module: str, layers) -> int:
    """Index of ``module``'s layer: a matching pattern (with ``*``) first, else the longest prefix."""
    for i, (_, specs) in enumerate(layers):
        if any("*" in s and fnmatch.fnmatchcase(module, s) for s in specs):
            return i
    best = (-1, -1)
    for i, (_, specs) in enumerate(layers):
        for s in specs:
            if "*" not in s and (module == s or module.startswith(s + ".")):
                best = max(best, (len(s), i))
    assert best[1] >= 0, f"{module} is in no layer of docs/ARCHITECTURE.md"
    return best[1]


def upward_imports(graph, layers) -> list[str]:
    return sorted(f"{m} ({layers[layer_of(m, layers)][0]}) imports {t} ({layers[layer_of(t, layers)][0]})"
                  for m, targets in graph.items() for t in targets
                  if layer_of(t, layers) > layer_of(m, layers))


def circles(graph) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


@pytest.fixture(scope="module")
def layers():
    return declared_layers((ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def graph():
    return import_graph()


def test_layers_block_lists_the_documented_order(layers):
    names = [n for n, _ in layers]
    for lower, higher in [("base", "data"), ("data", "model"), ("model", "quant"), ("quant", "train"),
                          ("train", "eval"), ("eval", "pipeline"), ("pipeline", "submit"), ("submit", "cli")]:
        assert names.index(lower) < names.index(higher)


def test_every_module_has_a_layer(graph, layers):
    for m in graph:
        layer_of(m, layers)


def test_no_import_circle(graph):
    assert circles(graph) == []


def test_no_upward_import(graph, layers):
    assert upward_imports(graph, layers) == []


def test_the_checks_fail_on_an_added_upward_import_and_a_circle(graph, layers):
    bad = {m: set(t) for m, t in graph.items()}
    src = "def f():\n    from pgolf.pipeline.run import run_pipeline\n"  # quant reaching up into the pipeline
    bad["pgolf.quant.quantize"] |= imports_of("pgolf.quant.quantize", src, graph)
    assert upward_imports(bad, layers) == [
        "pgolf.quant.quantize (quant) imports pgolf.pipeline.run (pipeline)"]
    bad["pgolf.errors"].add("pgolf.config")  # config imports errors: now a circle
    assert ["pgolf.config", "pgolf.errors"] in circles(bad)


def test_relative_and_package_imports_resolve(graph):
    mods = all_modules()
    src = "from . import turbo\nfrom ..format import artifact\nfrom pgolf.quant import binding\n"
    assert imports_of("pgolf.quant.schemes.kinds", src, mods) == {
        "pgolf.quant.schemes.turbo", "pgolf.quant.format.artifact", "pgolf.quant.binding"}
