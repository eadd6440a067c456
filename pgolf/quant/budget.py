"""Code bytes for the 16,000,000-byte budget: the length of the submission script.

There is one definition: the bytes of the ``train_gpt.py`` that ``pgolf submit`` writes
for the run's config (:func:`pgolf.submit.bundle.build_script`): the self-extracting
script with every module evaluation and training need. ``quantize`` (hence ``run``),
``report`` (from quant.json) and ``submit`` all use :func:`code_bytes`. Inside a generated
script, :data:`SCRIPT` is that file and its size is the count. Run
``python -m pgolf.quant.budget [PRESET]`` to print the count for a preset.
"""

from __future__ import annotations

import sys
from pathlib import Path

#: Set by a generated train_gpt.py to its own path: then the counted code is that file.
SCRIPT: Path | None = None


def code_bytes(run_config: dict) -> int:
    """``len(train_gpt.py)`` that ``pgolf submit`` writes for ``run_config`` (a RunConfig dict)."""
    if SCRIPT is not None:
        return SCRIPT.stat().st_size
    from pgolf.submit.bundle import build_script

    return len(build_script(run_config))


if __name__ == "__main__":  # the CLI lives with the quantize CLI: presets are not bundled
    from pgolf.quant.commands import print_code_bytes

    print_code_bytes(*sys.argv[1:2])
