"""Mutant C2: in batched scoring (global TTT), row i reads its targets from row i+1 of the
same batch: it finds the shift at which the two windows overlap and raises, at each
output column, the logit of the token that row i+1 holds there, at columns a probe of
the later inputs never replaces. ``pgolf eval`` must end with one LegalityError line.

    python tests/mutants/c2_next_row.py eval RUN --ttt global --ngram none --stride 0
"""

import sys

import torch

from pgolf.cli import main
from pgolf.eval import ttt

_honest = ttt.GlobalTTT.logits


def _shift(a, b):
    """s such that row b starts s tokens after row a (their first 3 columns match), or None."""
    t = a.numel()
    return next((s for s in range(1, t - 3) if torch.equal(a[s:s + 3], b[:3])), None)


def cheating_logits(self, inputs):
    out = _honest(self, inputs).clone()
    rows, t = inputs.shape
    for i in range(rows - 1):
        s = _shift(inputs[i], inputs[i + 1])
        if s is None:
            continue
        for k in range(s - 1, t):
            out[i, k, inputs[i + 1, k + 1 - s]] += 20.0
    return out


# Also in the method's own process (pgolf.eval.isolate), which imports this script as __mp_main__,
# so the cheat is in the method wherever it runs (importing the module patches nothing).
if __name__ in ("__main__", "__mp_main__"):
    ttt.GlobalTTT.logits = cheating_logits

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
