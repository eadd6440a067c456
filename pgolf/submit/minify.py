"""Shrink the bundled modules' source for the self-extracting train_gpt.py, keeping it readable.

Four ``ast`` passes, then ``ast.unparse`` and :func:`compact` (python-minifier's
printer with all of its transforms off: no renaming, so the unpacked code stays readable):

* docstrings go (comments never survive ``ast``);
* annotations of function arguments and returns go, and so do annotated assignments
  outside class bodies (``x: int = 1`` becomes ``x = 1``); class-body annotations stay,
  since dataclasses read them; ``from __future__ import annotations`` goes from a module
  with no annotation left;
* :func:`prune_unused` drops ``if __name__ == "__main__":`` blocks and every top-level
  function or class whose name appears nowhere in the kept code of any bundled module
  (as a name, attribute, imported name, keyword or word of a string constant), repeated
  until nothing more goes. This is conservative: anything that might be reached by name
  is kept;
* :func:`drop_unused_imports` then removes the imported names nothing uses any more (a
  pgolf module that was imported stays imported).

The compaction is checked: the compact text must parse to the same tree, otherwise the
plain ``ast.unparse`` text is used. Example::

    small = minify_modules({"pgolf.config": src, ...}, extra_roots="main()")
"""

from __future__ import annotations

import ast
import re


def strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                body.pop(0)
                if not body:
                    body.append(ast.Pass())
    return tree


class _Annotations(ast.NodeTransformer):
    """Removes annotations that nothing reads at run time (not those in class bodies)."""

    def visit_FunctionDef(self, node):
        node.returns = None
        a = node.args
        for arg in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg]:
            if arg is not None:
                arg.annotation = None
        self.generic_visit(node)
        return node

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node):
        node.body = [s if isinstance(s, ast.AnnAssign) else self.visit(s) for s in node.body]
        return node

    def visit_AnnAssign(self, node):
        if node.value is None:
            return ast.Pass() if node.simple else None
        return ast.Assign(targets=[node.target], value=node.value, lineno=node.lineno)


def strip_annotations(tree: ast.AST) -> ast.AST:
    return ast.fix_missing_locations(_Annotations().visit(tree))


def _has_annotations(tree: ast.AST) -> bool:
    for n in ast.walk(tree):
        if isinstance(n, ast.AnnAssign) or getattr(n, "returns", None) is not None:
            return True
        if isinstance(n, ast.arg) and n.annotation is not None:
            return True
    return False


def drop_future_annotations(tree: ast.Module) -> ast.Module:
    """Remove ``from __future__ import annotations`` from a module that has no annotation left
    (after :func:`strip_annotations`): there it changes nothing."""
    if not _has_annotations(tree):
        tree.body = [s for s in tree.body if not (isinstance(s, ast.ImportFrom) and s.module == "__future__"
                                                  and [a.name for a in s.names] == ["annotations"])] or [ast.Pass()]
    return tree


def _idents(node: ast.AST) -> set[str]:
    out: set[str] = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name):
            out.add(n.id)
        elif isinstance(n, ast.Attribute):
            out.add(n.attr)
        elif isinstance(n, ast.alias):
            out.update(n.name.split("."))
        elif isinstance(n, ast.keyword) and n.arg:
            out.add(n.arg)
        elif isinstance(n, ast.Constant) and isinstance(n.value, str):
            out.update(re.findall(r"\w+", n.value))
    return out


def _bound(alias: ast.alias) -> str:
    return alias.asname or alias.name.split(".")[0]


def drop_unused_imports(tree: ast.Module) -> ast.Module:
    """Remove top-level imported names that the (pruned) module never uses: any name of a
    ``from X import ...`` that keeps another name or whose X is not pgolf (so no pgolf
    module stops being imported), and ``import X`` of a standard-library module. "Uses"
    is as wide as :func:`prune_unused`'s: a name, attribute or word of a string anywhere."""
    import sys

    body = []
    for s in tree.body:
        if isinstance(s, (ast.Import, ast.ImportFrom)) and getattr(s, "module", None) != "__future__":
            used = _idents(ast.Module(body=[x for x in tree.body if x is not s], type_ignores=[]))
            keep = [a for a in s.names if _bound(a) in used or a.name == "*"]
            if isinstance(s, ast.Import):
                keep += [a for a in s.names if a not in keep and a.name.split(".")[0] not in sys.stdlib_module_names]
            elif not keep and (s.level or (s.module or "").split(".")[0] == "pgolf"):
                keep = s.names[:1]  # the module itself is still imported, as in the source
            if not keep:
                continue
            s.names = [a for a in s.names if a in keep]
        body.append(s)
    tree.body = body or [ast.Pass()]
    return tree


def _is_main_guard(s: ast.stmt) -> bool:
    return isinstance(s, ast.If) and "__main__" in ast.unparse(s.test) and "__name__" in ast.unparse(s.test)


def prune_unused(trees: dict[str, ast.Module], extra_roots: str = "") -> None:
    """Drop unreferenced top-level functions/classes and main guards from ``trees`` in place."""
    defs = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    used = _idents(ast.parse(extra_roots))
    cands = []
    for tree in trees.values():
        tree.body = [s for s in tree.body if not _is_main_guard(s)]
        for s in tree.body:
            if isinstance(s, defs):
                cands.append(s)
            else:
                used |= _idents(s)
    kept: set[int] = set()
    grew = True
    while grew:
        grew = False
        for s in cands:
            if id(s) not in kept and s.name in used:
                kept.add(id(s))
                used |= _idents(s)
                used.update(ast.unparse(d) for d in s.decorator_list)
                grew = True
    for tree in trees.values():
        tree.body = [s for s in tree.body if not isinstance(s, defs) or id(s) in kept] or [ast.Pass()]


#: python-minifier as a printer only: every transform is off, so the text it prints parses to
#: exactly the tree it was given (names, literals and statements unchanged, still readable).
_PRINT_ONLY = dict(
    remove_annotations=False, remove_pass=False, remove_literal_statements=False, combine_imports=False,
    hoist_literals=False, rename_locals=False, rename_globals=False, remove_object_base=False,
    convert_posargs_to_args=False, preserve_shebang=False, remove_asserts=False, remove_debug=False,
    remove_explicit_return_none=False, remove_builtin_exception_brackets=False, constant_folding=False,
    prefer_single_line=False, remove_dead_branches=False,
)


def compact(text: str) -> str:
    """``text`` printed compactly by python-minifier (tab indentation, no optional spaces, simple
    statements joined with ``;`` and onto their ``if``/``for`` line); returned only if it parses
    to the same tree, else ``text``."""
    import python_minifier

    try:
        small = python_minifier.minify(text, **_PRINT_ONLY)
        same = ast.dump(ast.parse(small)) == ast.dump(ast.parse(text))
    except (SyntaxError, ValueError):
        same = False
    return small if same else text


def minify_modules(sources: dict[str, str], extra_roots: str = "") -> dict[str, str]:
    """Minified source per module name (see the module docstring)."""
    trees = {m: drop_future_annotations(strip_annotations(strip_docstrings(ast.parse(src))))
             for m, src in sources.items()}
    prune_unused(trees, extra_roots)
    return {m: compact(ast.unparse(drop_unused_imports(t))) + "\n" for m, t in trees.items()}
