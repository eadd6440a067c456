"""Generate ``train_gpt.py``: one self-contained script, built from the package source, that
reproduces a run (train → quantize → evaluate the decoded artifact) and prints its val_bpb.

The script embeds the source of every ``pgolf`` module the pipeline needs (found by
following ``pgolf`` imports, including imports inside functions, from
:data:`ENTRY_MODULES`), with docstrings and comments stripped (``ast`` round trip), as
string literals; at start it writes them once into a folder keyed by their hash
(``$PGOLF_BUNDLE_DIR`` or the temp folder) and imports them from there, so
module-qualified references (``from pgolf.quant import turbo; turbo.encode(...)``),
same-named private helpers in different modules and numba's on-disk cache keep working
exactly as in the package. Its ``main`` starts from the
run's saved config, applies the challenge's environment variables (``DATA_PATH``,
``TOKENIZER_PATH``, ``RUN_ID``, ``NUM_LAYERS``, ``MODEL_DIM``, ``ITERATIONS``,
``MAX_WALLCLOCK_SECONDS``, ``SEED``, ...; see :data:`pgolf.config.ENV_OVERRIDES`) and runs
:func:`pgolf.pipeline.run.run_pipeline`; it works as ``python train_gpt.py`` and as
``torchrun --standalone --nproc_per_node=8 train_gpt.py``. Its size is the code the
budget counts.

    text = build_script(run_config_dict)       # str
    write_script("records/x/train_gpt.py", run_config_dict)
"""

from __future__ import annotations

import ast
import os
import pprint
from pathlib import Path

from pgolf.errors import PgolfError
from pgolf.fileio import atomic_write_text

PACKAGE = "pgolf"
PACKAGE_ROOT = Path(__file__).resolve().parents[1]

#: Where the import walk starts: the pipeline (which reaches train, quant and eval).
ENTRY_MODULES = ("pgolf.config", "pgolf.pipeline.run", "pgolf.quant.budget")
#: Modules never bundled (reporting, CLIs, downloads, submission itself): not needed to
#: reproduce and score a run, and importing one from the script fails loudly.
EXCLUDED_PREFIXES = (
    "pgolf.cli", "pgolf.__main__", "pgolf.pipeline.report", "pgolf.pipeline.plots", "pgolf.pipeline.demo",
    "pgolf.pipeline.commands", "pgolf.pipeline.results", "pgolf.pipeline.stats", "pgolf.submit",
    "pgolf.data.fineweb", "pgolf.data.build", "pgolf.data.corpus", "pgolf.data.commands",
    "pgolf.train.commands", "pgolf.quant.commands", "pgolf.quant.qat_bench",
)


# --------------------------------------------------------------------------- discovery


def module_path(name: str) -> Path | None:
    """Source file of package module ``name`` (``pkg/__init__.py`` for packages), or None."""
    rel = Path(*name.split("."))
    for cand in (PACKAGE_ROOT.parent / rel / "__init__.py", PACKAGE_ROOT.parent / rel.with_suffix(".py")):
        if cand.is_file():
            return cand
    return None


def is_package(name: str) -> bool:
    p = module_path(name)
    return p is not None and p.name == "__init__.py"


def _excluded(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in EXCLUDED_PREFIXES)


def _resolve_relative(module: str | None, level: int, current: str) -> str:
    base = current.split(".") if is_package(current) else current.split(".")[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([module] if module else []))


def imported_modules(name: str) -> set[str]:
    """Package modules that ``name`` imports anywhere in its source (incl. inside functions)."""
    tree = ast.parse(module_path(name).read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve_relative(node.module, node.level, name) if node.level else node.module
            if not target or target.split(".")[0] != PACKAGE:
                continue
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names if module_path(f"{target}.{a.name}"))
    out = set()
    for mod in found:  # a module import also runs its parent packages' __init__
        parts = mod.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {m for m in out if module_path(m)}


def bundled_modules(entries: tuple[str, ...] = ENTRY_MODULES) -> list[str]:
    """The import closure of ``entries`` minus :data:`EXCLUDED_PREFIXES`, sorted (packages first)."""
    seen: set[str] = set()
    todo = [m for e in entries for m in imported_modules(e) | {e}]
    while todo:
        name = todo.pop()
        if name in seen or _excluded(name):
            continue
        if module_path(name) is None:
            raise PgolfError(f"bundle: module {name} not found under {PACKAGE_ROOT}")
        seen.add(name)
        todo.extend(imported_modules(name) - seen)
    return sorted(seen, key=lambda m: (m.count("."), m))


# ---------------------------------------------------------------------------- stripping


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                body.pop(0)
                if not body:
                    body.append(ast.Pass())
    return tree


def compact_source(source: str, strip: bool = True) -> str:
    """Source without docstrings and comments (``ast`` round trip); unchanged if not ``strip``."""
    if not strip:
        return source
    return ast.unparse(_strip_docstrings(ast.parse(source))) + "\n"


def _literal(text: str) -> str:
    """A Python literal for ``text``: a raw triple-quoted string when exact, else repr()."""
    for q in ("'''", '"""'):
        lit = f"r{q}{text}{q}"
        try:
            if q not in text and ast.literal_eval(lit) == text:
                return lit
        except (SyntaxError, ValueError):
            pass
    return repr(text)


# ------------------------------------------------------------------------------ script

_HEADER = '''#!/usr/bin/env python3
"""train_gpt.py: {title}

Generated by pgolf {version} from its package source ({n} modules). Reproduces the run:
train -> EMA -> quantize to the artifact (budget check) -> decode it -> evaluate it
(standard, sliding window, n-gram mode "{ngram}") and print the final val_bpb.

    python train_gpt.py
    torchrun --standalone --nproc_per_node=8 train_gpt.py

Environment: DATA_PATH (shards folder, default ./data/datasets/fineweb10B_sp1024),
TOKENIZER_PATH (default ./data/tokenizers/fineweb_1024_bpe.model), RUN_ID (output in
runs/RUN_ID), and the challenge's overrides: {env_vars}.
"""
import json
import os
import sys

RUN_CONFIG = {config}

'''

_LOADER = '''

def _unpack():
    """Write the embedded modules once into a folder keyed by their hash; return the folder.

    Real files (not exec'd strings) keep numba's on-disk cache, inspect and torch.compile working.
    """
    import hashlib
    import tempfile

    digest = hashlib.sha256(repr(sorted(_SOURCES.items())).encode("utf-8")).hexdigest()[:16]
    base = os.environ.get("PGOLF_BUNDLE_DIR") or tempfile.gettempdir()
    root = os.path.join(base, "pgolf_train_gpt_" + digest)
    for name, src in _SOURCES.items():
        rel = name.replace(".", os.sep) + (os.sep + "__init__.py" if name in _PACKAGES else ".py")
        path = os.path.join(root, rel)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                if f.read() == src:
                    continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = "%s.%d.tmp" % (path, os.getpid())
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(src)
        os.replace(tmp, path)
    return root


_PKG_DIR = _unpack()
sys.path.insert(0, _PKG_DIR)


def main():
    from pathlib import Path

    import pgolf.quant.budget as budget
    from pgolf.config import RunConfig, apply_env, validate
    from pgolf.pipeline.run import run_pipeline

    script = Path(os.path.abspath(__file__))
    budget.PACKAGE_ROOT = script.parent / "pgolf"  # the counted code is this one file
    budget.counted_code_files = lambda: [script]
    cfg = RunConfig.from_dict(RUN_CONFIG)
    apply_env(cfg, os.environ)
    validate(cfg)
    data = os.environ.get("DATA_PATH", "./data/datasets/fineweb10B_sp1024")
    tok = os.environ.get("TOKENIZER_PATH", "./data/tokenizers/fineweb_1024_bpe.model")
    out = Path("runs") / os.environ.get("RUN_ID", "train_gpt_seed%d" % cfg.train.seed)
    res = run_pipeline(cfg, data, tok, out, report=False)
    if not res["env"].is_main:
        return
    ev = json.loads((out / "eval.json").read_text())
    q = json.loads((out / "quant.json").read_text())
    code = os.path.getsize(script)
    std, sld, ng = ev["neural"]["standard"], ev["neural"].get("sliding") or {}, ev.get("ngram") or {}
    print("final_artifact artifact_bytes:%d code_bytes:%d bytes_total:%d" % (q["artifact_bytes"], code,
                                                                          q["artifact_bytes"] + code))
    print("final_roundtrip val_loss:%.8f val_bpb:%.8f" % (std["val_loss"], std["val_bpb"]))
    score, label = std, "standard"
    if sld.get("val_bpb") is not None:
        score, label = sld, "sliding stride %s" % sld.get("stride")
        print("final_sliding val_loss:%.8f val_bpb:%.8f" % (sld["val_loss"], sld["val_bpb"]))
    if ng.get("val_bpb") is not None and ng.get("mode") not in (None, "none"):
        if ng.get("mode") == "causal" and ng.get("valid", True):
            score, label = ng, "causal n-gram"
            print("final_ngram val_loss:%.8f val_bpb:%.8f" % (ng["val_loss"], ng["val_bpb"]))
        else:
            print("final_ngram_%s val_bpb:%.8f leaky (not a valid compression rate)" % (ng["mode"], ng["val_bpb"]))
    print("val_loss:%.8f val_bpb:%.8f (%s)" % (score["val_loss"], score["val_bpb"], label))


if __name__ == "__main__":
    main()
'''


def build_script(run_config: dict, title: str = "pgolf submission", strip: bool = True) -> str:
    """The text of train_gpt.py for ``run_config`` (a RunConfig dict, e.g. a run's config.json)."""
    from pgolf import __version__
    from pgolf.config import ENV_OVERRIDES

    cfg = {k: v for k, v in run_config.items() if k in ("preset", "model", "train", "quant", "eval")}
    if isinstance(cfg.get("train"), dict):  # the script picks the GPU when there is one
        cfg["train"] = {**cfg["train"], "device": "auto"}
    mods = bundled_modules()
    sources = {m: compact_source(module_path(m).read_text(encoding="utf-8"), strip) for m in mods}
    parts = [_HEADER.format(
        title=title, version=__version__, n=len(mods), ngram=cfg.get("eval", {}).get("ngram", "?"),
        env_vars=", ".join(sorted(ENV_OVERRIDES)), config=pprint.pformat(cfg, width=110, sort_dicts=True),
    )]
    parts.append("_PACKAGES = {%s}\n" % ", ".join(repr(m) for m in mods if is_package(m)))
    parts.append("_SOURCES = {}\n")
    for m in mods:
        parts.append(f"_SOURCES[{m!r}] = {_literal(sources[m])}\n")
    parts.append(_LOADER)
    text = "".join(parts)
    ast.parse(text)  # the generated script must at least be valid Python
    return text


def write_script(path: str | os.PathLike, run_config: dict, title: str = "pgolf submission") -> int:
    """Write train_gpt.py atomically; returns its size in bytes (what the budget counts)."""
    text = build_script(run_config, title)
    atomic_write_text(path, text)
    return len(text.encode("utf-8"))
