"""Optional feature modules, looked up by the config value that selects them.

Code that only some configs use (the leaky n-gram modes, the GPTQ/turbo-rd schemes, TTT,
the zstd codec, the record's model features) is never imported statically from shared
code: the shared code calls :func:`load` with the config field and its value, and
:data:`FEATURES` names the module; a switch (a bool or a layer number: any true value
selects it) has the value ``True`` in :data:`FEATURES`.
This keeps the generated
``train_gpt.py`` small: :mod:`pgolf.submit.bundle` follows static imports only, and adds
exactly the modules that :func:`modules_for` names for the run's config. A new optional
feature = a module plus one line here.

    ngram_leaky = load("eval.ngram", "two-pass")
    modules_for({"eval": {"ngram": "causal"}, ...})   # -> []
"""

from __future__ import annotations

import importlib

from pgolf.errors import ConfigError

#: ``(section.field, value) -> module`` for every config value whose code is optional.
FEATURES: dict[tuple[str, str], str] = {
    ("eval.ngram", "two-pass"): "pgolf.eval.ngram_leaky",
    ("eval.ngram", "loo"): "pgolf.eval.ngram_leaky",
    ("quant.scheme", "record"): "pgolf.quant.schemes.grouped",  # GPTQ, LQER, groups, calibration, grid QAT
    ("quant.scheme", "turbo-rd"): "pgolf.quant.schemes.grouped",
    ("quant.codec", "zstd"): "pgolf.quant.format.zstd_codec",  # needs the optional zstandard package
    ("ttt.mode", "lora"): "pgolf.eval.ttt",
    ("ttt.mode", "global"): "pgolf.eval.ttt",
    ("ttt.mode", "phased"): "pgolf.eval.ttt",
    ("model.smear_mode", "window"): "pgolf.model.record",
    ("model.sparse_attn_gate", True): "pgolf.model.record",  # switches: any true value selects them
    ("model.parallel_start_layer", True): "pgolf.model.record",
    ("model.num_loops", True): "pgolf.model.record",
    ("model.doc_attention", True): "pgolf.model.docattn",
}


def load(field: str, value: str):
    """The module implementing ``field == value`` (imported on first use)."""
    name = FEATURES.get((field, value))
    if name is None:
        raise ConfigError(f"{field}={value!r} names no optional feature module")
    return importlib.import_module(name)


def optional(module: str):
    """``module`` imported, or None where it is absent: a generated train_gpt.py bundles only
    what scoring needs, so its evaluation leaves out the 8xH100 projection (:mod:`pgolf.eval.timing`)."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module:
            raise
        return None


def _selects(value, wanted) -> bool:
    """A config value selects an entry: equal to it, or any true value for a switch (``True``)."""
    return bool(value) if wanted is True else value == wanted


def modules_for(run_config: dict) -> list[str]:
    """The optional modules a run config (a RunConfig dict) selects, sorted."""
    out = set()
    for (field, value), name in FEATURES.items():
        section, key = field.split(".", 1)
        if _selects((run_config.get(section) or {}).get(key), value):
            out.add(name)
    return sorted(out)
