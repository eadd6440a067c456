"""What a generated ``train_gpt.py`` runs once it has unpacked its modules.

``main(config_path, script)`` starts from the run's saved config (a JSON file unpacked
beside the modules), applies the challenge's
environment variables (``DATA_PATH``, ``TOKENIZER_PATH``, ``RUN_ID``, ``NUM_LAYERS``,
``SEED``, ...; see :data:`pgolf.config.ENV_OVERRIDES`), runs every stage once (train ->
quantize -> decode -> evaluate; :func:`pgolf.pipeline.stages.run_once`) into a new
``runs/RUN_ID`` and prints the final lines in the challenge's format. The code bytes counted by the quantize step are the script file's own
size. :mod:`pgolf.submit.bundle` builds the script's import closure from this module.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def main(config_path: str, script: str) -> None:
    import pgolf.quant.budget as budget
    from pgolf.config import RunConfig, apply_env, validate
    from pgolf.pipeline.stages import run_once

    budget.SCRIPT = Path(os.path.abspath(script))  # the counted code is this one file
    cfg = RunConfig.from_dict(json.loads(Path(config_path).read_text(encoding="utf-8")))
    apply_env(cfg, os.environ)
    validate(cfg)
    data = os.environ.get("DATA_PATH", "./data/datasets/fineweb10B_sp1024")
    tok = os.environ.get("TOKENIZER_PATH", "./data/tokenizers/fineweb_1024_bpe.model")
    out = Path("runs") / os.environ.get("RUN_ID", "train_gpt_seed%d" % cfg.train.seed)
    if run_once(cfg, data, tok, out).is_main:
        print_results(out, budget.SCRIPT.stat().st_size)


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
