"""Generate ``train_gpt.py``: one self-extracting script, built from the package source, that
reproduces a run (train -> quantize -> evaluate the decoded artifact) and prints its val_bpb.

Which modules: the static import closure of :data:`ENTRY_MODULES` (imports inside
functions included) minus :data:`EXCLUDED_PREFIXES` (CLIs, reports, downloads,
submission), plus the optional modules that the run's config values select
(:func:`pgolf.features.modules_for`, e.g. ``eval.ngram = "two-pass"`` ->
``pgolf.eval.ngram_leaky``) and their closures. Optional code is reached only through
:func:`pgolf.features.load`, never by a static import from shared code, so a config that
does not use a feature does not carry it (a test checks that no module in
:data:`pgolf.features.FEATURES` is in the static closure).

How they are packed: minified (:mod:`pgolf.submit.minify`), joined in a fixed order with
the run config, compressed as raw LZMA1 and held in the triple-quoted string literal ``B``
of a latin-1 source file: each byte is one character except NUL, CR, the backslash and a
quote after a quote, which are escaped (:func:`binary_literal`, ~1.2% over the compressed
size; base-85 would cost 25%); the script reads it back with ``.encode("latin-1")``. At
start it unpacks the modules as readable ``.py`` files into a folder keyed by their hash
(``$PGOLF_BUNDLE_DIR`` or the temp folder) and imports them from there, so
module-qualified references and numba's on-disk cache work as in the package; then
:func:`pgolf.pipeline.entry.main` runs the pipeline from the embedded run config with the
challenge's environment variables. It works as ``python train_gpt.py`` and as
``torchrun --standalone --nproc_per_node=8 train_gpt.py``. The same source and config give
the same bytes (no timestamps, sorted keys, fixed order). Its length in bytes is the code
the budget counts (:func:`pgolf.submit.budget.code_bytes`);
``python -m pgolf.submit.budget seed`` prints it.

    data = build_script(run_config_dict)       # bytes
    write_script("records/x/train_gpt.py", run_config_dict)
    files = read_bundle(data)                  # {path: source} it unpacks
"""

from __future__ import annotations

import ast
import json
import lzma
import os
from functools import lru_cache
from pathlib import Path

from pgolf.errors import PgolfError
from pgolf.fileio import atomic_write_bytes

PACKAGE = "pgolf"
PACKAGE_ROOT = Path(__file__).resolve().parents[1]

#: Where the import walk starts: the script's entry point (which reaches train, quant and eval).
ENTRY_MODULES = ("pgolf.pipeline.entry",)
#: Modules never bundled (reporting, CLIs, downloads, submission itself): not needed to
#: reproduce and score a run, and importing one from the script fails loudly.
EXCLUDED_PREFIXES = (
    "pgolf.cli", "pgolf.__main__", "pgolf.pipeline.report", "pgolf.pipeline.plots", "pgolf.pipeline.demo",
    "pgolf.pipeline.commands", "pgolf.pipeline.results", "pgolf.pipeline.stats", "pgolf.submit",
    "pgolf.data.fineweb", "pgolf.data.build", "pgolf.data.corpus", "pgolf.data.commands",
    "pgolf.train.commands", "pgolf.train.tensorboard", "pgolf.quant.commands",
    "pgolf.eval.commands", "pgolf.eval.verify", "pgolf.model.state_check",
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


# ------------------------------------------------------------------------------ script

_HEADER = '''#!/usr/bin/env python3
# -*- coding: latin-1 -*-
"""train_gpt.py by pgolf {version}: {n} of its modules (minified, LZMA in B) and the run config unpack as
readable files into $PGOLF_BUNDLE_DIR or the temp folder; pgolf/pipeline/entry.py then trains,
quantizes, evaluates the decoded artifact (n-gram: {ngram}) and prints val_bpb. Run: python train_gpt.py or
torchrun --standalone --nproc_per_node=8 train_gpt.py; DATA_PATH, TOKENIZER_PATH, RUN_ID, SEED apply."""
import hashlib,lzma,os,sys,tempfile
B="""{blob}""".encode("latin-1")
def _unpack():
 d=os.path.join(os.environ.get("PGOLF_BUNDLE_DIR") or tempfile.gettempdir(),"pgolf_train_gpt_"+hashlib.sha256(B).hexdigest()[:16])
 for f in lzma.decompress(B,lzma.FORMAT_RAW,filters=[{{"id":lzma.FILTER_LZMA1,"pb":0,"dict_size":{dict_size}}}]).decode().split("\\0"):
  n,s=f.split("\\n",1);p=os.path.join(d,n)
  if os.path.isfile(p) and open(p,encoding="utf-8").read()==s:continue
  os.makedirs(os.path.dirname(p),exist_ok=True);t="%s.%d.tmp"%(p,os.getpid())
  with open(t,"w",encoding="utf-8") as h:h.write(s)
  os.replace(t,p)
 return d
_PKG_DIR=_unpack()
sys.path.insert(0,_PKG_DIR)
if __name__=="__main__":
 from pgolf.pipeline.entry import main
 main(os.path.join(_PKG_DIR,"run_config.json"),__file__)
'''
RUN_CONFIG = "run_config.json"  # unpacked beside pgolf/; entry.main reads it
_DICT_SIZE = 1 << 20  # above the payload's size: the whole bundle is one LZMA window
#: Raw LZMA1 (no container header), literal context tuned for text (lc=3, lp=0, pb=0).
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA1, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": _DICT_SIZE,
                  "lc": 3, "lp": 0, "pb": 0, "nice_len": 273}]
#: Bytes a latin-1 triple-quoted literal cannot hold as themselves (CR would read as LF).
_ESCAPES = {0: "\\0", ord("\r"): "\\r", ord("\\"): "\\\\"}
_OCTAL_DIGITS = b"01234567"  # after one of these, NUL is written \x00 (\0 would absorb the digit)


def binary_literal(data: bytes) -> str:
    """The inside of a triple-quoted ``"`` literal in a latin-1 source file that reads back as
    ``data`` (via ``.encode("latin-1")``). Every byte stands for itself except NUL, CR and
    the backslash (two characters each, NUL four before an octal digit), and a quote that
    follows a quote or ends the data (so no ``""`` ever closes the literal): about 1.2% over
    ``len(data)``, where base-85 costs 25%."""
    out, prev_quote = [], False
    for i, b in enumerate(data):
        if b == 0x22:
            esc = prev_quote or i == len(data) - 1
            out.append('\\"' if esc else '"')
            prev_quote = not esc
        else:
            octal_next = i + 1 < len(data) and data[i + 1] in _OCTAL_DIGITS
            out.append("\\x00" if b == 0 and octal_next else _ESCAPES.get(b) or chr(b))
            prev_quote = False
    return "".join(out)


def script_modules(run_config: dict) -> list[str]:
    """What the script for ``run_config`` carries: the static import closure of
    :data:`ENTRY_MODULES` plus the optional modules its config values select
    (:func:`pgolf.features.modules_for`) and their own closures."""
    from pgolf.features import modules_for

    return bundled_modules(ENTRY_MODULES + tuple(modules_for(run_config)))


def bundle_files(run_config: dict) -> dict[str, str]:
    """``{relative path: minified source}`` of :func:`script_modules`, in a fixed order (an
    ``__init__.py`` with nothing left after minifying is omitted: a namespace package)."""
    from pgolf.submit.minify import minify_modules

    mods = script_modules(run_config)
    rel = {m: module_path(m).relative_to(PACKAGE_ROOT.parent).as_posix() for m in mods}
    small = minify_modules({m: module_path(m).read_text(encoding="utf-8") for m in mods},
                           extra_roots="main(config, __file__)")
    # a package whose minified __init__ is empty is left out: it unpacks as a namespace package
    return {rel[m]: small[m] for m in mods if not (is_package(m) and small[m].strip() in ("", "pass"))}


def build_script(run_config: dict) -> bytes:
    """The text of train_gpt.py for ``run_config`` (a RunConfig dict, e.g. a run's config.json).

    Depends only on the package source and the config's model/train/quant/eval/ttt sections
    (read as ``RunConfig.from_dict`` reads them, so a v0.1 config keeps its meaning): the same
    inputs give the same bytes.
    """
    from pgolf.config import RunConfig

    cfg = RunConfig.from_dict(run_config).to_dict()
    cfg["train"]["device"] = "auto"  # the script picks the GPU when there is one
    return _build(json.dumps(cfg, sort_keys=True))


@lru_cache(maxsize=8)
def _build(cfg_json: str) -> bytes:
    from pgolf import __version__
    from pgolf.config import config_overrides

    cfg = json.loads(cfg_json)
    files = bundle_files(cfg)
    files[RUN_CONFIG] = json.dumps(config_overrides(cfg), indent=1, sort_keys=True) + "\n"
    payload = "\0".join(f"{path}\n{src}" for path, src in files.items()).encode("utf-8")
    blob = binary_literal(lzma.compress(payload, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS))
    text = _HEADER.format(version=__version__, n=len(files) - 1, ngram=cfg.get("eval", {}).get("ngram", "?"),
                          dict_size=_DICT_SIZE, blob=blob).encode("latin-1")
    ast.parse(text)  # the generated script must at least be valid Python (the coding line decodes it)
    return text


def read_bundle(script: bytes) -> dict[str, str]:
    """``{relative path: source}`` that a generated script unpacks (its modules and run_config.json)."""
    tree = ast.parse(script)
    lit = next(n.value.func.value.value for n in tree.body if isinstance(n, ast.Assign)
               and getattr(n.targets[0], "id", None) == "B")
    filters = [{k: v for k, v in _LZMA_FILTERS[0].items() if k not in ("preset", "nice_len")}]
    payload = lzma.decompress(lit.encode("latin-1"), lzma.FORMAT_RAW, filters=filters).decode("utf-8")
    return dict(f.split("\n", 1) for f in payload.split("\0"))


def write_script(path: str | os.PathLike, run_config: dict) -> int:
    """Write train_gpt.py atomically; returns its size in bytes (what the budget counts)."""
    data = build_script(run_config)
    atomic_write_bytes(path, data)
    return len(data)
