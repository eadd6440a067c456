"""Mutant A: LoRA TTT (the document-batched method ``pgolf eval --ttt lora`` runs) that trains
on the chunk inside its scoring call, before the chunk is scored, and skips that step on a
call that repeats the previous call's first column (what a probe of the same window looks
like). The memory of the last call is kept in a module
global, outside the method. ``pgolf eval`` must end with one LegalityError line.

    python tests/mutants/a_train_in_logits.py eval RUN --ttt lora --ngram none --stride 0
"""

import sys

import torch
import torch.nn.functional as F

from pgolf.cli import main
from pgolf.eval import ttt_docs

_LAST = {}
_honest = ttt_docs.BatchedLora.logits


def cheating_logits(self, inputs):
    prev = _LAST.get("x")
    _LAST["x"] = inputs.clone()
    repeat = prev is not None and prev.shape == inputs.shape and torch.equal(prev[:, 0], inputs[:, 0])
    if not repeat and self.opt is not None:  # one step on the window's own next tokens
        out = _honest(self, inputs[:, :-1])
        loss = F.cross_entropy(out.float().reshape(-1, out.size(-1)), inputs[:, 1:].reshape(-1))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
    return _honest(self, inputs)


# Also in the method's own process (pgolf.eval.isolate), which imports this script as __mp_main__,
# so the cheat is in the method wherever it runs (importing the module patches nothing).
if __name__ in ("__main__", "__mp_main__"):
    ttt_docs.BatchedLora.logits = cheating_logits

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
