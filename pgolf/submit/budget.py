"""Code bytes for the 16,000,000-byte budget: the length of the submission script.

There is one definition: the bytes of the ``train_gpt.py`` that ``pgolf submit`` writes
for the run's config (:func:`pgolf.submit.bundle.build_script`): the self-extracting
script with every module evaluation and training need. It is computed here, where the
script is made, and handed down as a number: the command line (``pgolf quantize``,
``pgolf run``, ``pgolf frontier``) passes :func:`code_bytes` to the pipeline, which passes
the count to :func:`pgolf.quant.quantize.quantize_run` (``code_bytes=N``); ``report``
reads it from quant.json and ``submit`` recounts it. Inside a generated script the count
is that file's own size (:mod:`pgolf.pipeline.entry`). Run
``python -m pgolf.submit.budget [PRESET]`` to print the count for a preset (default seed).
"""

from __future__ import annotations

import sys
from pathlib import Path


def code_bytes(run_config: dict) -> int:
    """``len(train_gpt.py)`` that ``pgolf submit`` writes for ``run_config`` (a RunConfig dict)."""
    from pgolf.submit.bundle import build_script

    return len(build_script(run_config))


def script_config(run_dir, scheme=None, codec=None, budget=None) -> dict:
    """The config the run's train_gpt.py is built from: ``RUN_DIR/config.json`` with the
    quantization these options select (what quantize records as quant.json's ``quant_config``)."""
    from pgolf.fileio import read_json
    from pgolf.quant.quantize import apply_options, load_config

    cfg = apply_options(load_config(run_dir), scheme, codec, budget)
    return {**read_json(Path(run_dir) / "config.json"), "quant": cfg.to_dict()["quant"]}


def run_code_bytes(run_dir, scheme=None, codec=None, budget=None) -> int:
    """:func:`code_bytes` of the script ``pgolf submit`` writes for ``run_dir`` quantized with
    these options: the ``code_bytes=N`` that :func:`pgolf.quant.quantize.quantize_run` needs."""
    return code_bytes(script_config(run_dir, scheme, codec, budget))


def print_code_bytes(preset: str = "seed") -> None:
    """``python -m pgolf.submit.budget [PRESET]``: print the code bytes of PRESET's train_gpt.py."""
    from pgolf.presets import get_preset

    print(f"{code_bytes(get_preset(preset).to_dict()):,} bytes of train_gpt.py for preset {preset}")


if __name__ == "__main__":
    print_code_bytes(*sys.argv[1:2])
