"""What a generated ``train_gpt.py`` runs once it has unpacked its modules.

``main(config_path, script)`` starts from the run's config (a JSON file unpacked beside
the modules that holds only the fields that differ from pgolf's defaults,
:func:`pgolf.config.config_overrides`; :func:`script_config` reads it back), applies the challenge's
environment variables (``DATA_PATH``, ``TOKENIZER_PATH``, ``RUN_ID``, ``NUM_LAYERS``,
``SEED``, ...; see :data:`pgolf.config.ENV_OVERRIDES`), runs every stage once (train ->
quantize -> decode -> evaluate; :func:`pgolf.pipeline.stages.run_once`) into a new
``runs/RUN_ID`` and prints the final lines in the challenge's format. The code bytes handed
to the quantize step are the script file's own size. :mod:`pgolf.submit.bundle` builds the script's import closure from this module.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(config_path: str, script: str) -> None:
    """Run the script's config (see the module docstring); a PgolfError ends it with one line, exit 1."""
    from pgolf.errors import PgolfError

    try:
        _run(config_path, script)
    except PgolfError as e:
        print(f"train_gpt.py: error: {e}", file=sys.stderr)
        raise SystemExit(1) from None


def _run(config_path: str, script: str) -> None:
    from pgolf.errors import PgolfError
    from pgolf.config import apply_env, validate
    from pgolf.pipeline.stages import run_once

    code = os.path.getsize(script)  # the counted code is this one file
    cfg = script_config(Path(config_path).read_text(encoding="utf-8"))
    apply_env(cfg, os.environ)
    validate(cfg)
    data = os.environ.get("DATA_PATH", "./data/datasets/fineweb10B_sp1024")
    tok = os.environ.get("TOKENIZER_PATH", "./data/tokenizers/fineweb_1024_bpe.model")
    out = Path("runs") / os.environ.get("RUN_ID", "train_gpt_seed%d" % cfg.train.seed)
    if (out / "config.json").exists():
        raise PgolfError(f"{out} already holds a run; set RUN_ID to another name, or remove it")
    if run_once(cfg, data, tok, out, lambda *_, **__: code).is_main:
        print_results(out, code)


def script_config(text: str):
    """The RunConfig that :func:`pgolf.config.config_overrides`'s JSON ``text`` stands for: defaults, then its fields."""
    from pgolf.config import RunConfig, set_field

    d = json.loads(text)
    cfg = RunConfig(preset=d.pop("preset", "custom"))
    for section, fields in d.items():
        for key, value in fields.items():
            set_field(cfg, f"{section}.{key}", value)
    return cfg


def print_results(out: Path, code: int) -> None:
    """The final lines: bytes, the round-trip score and the submitted val_bpb."""
    ev = json.loads((out / "eval.json").read_text())
    q = json.loads((out / "quant.json").read_text())
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
