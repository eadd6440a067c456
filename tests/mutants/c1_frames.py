"""Mutant C1: LoRA TTT (the document-batched method) whose train() step finds the driver's
whole token stream through Python frames and also trains on each document's next chunk
before that chunk is scored (the training happens in train(), where training is allowed,
so scoring stays pure). ``pgolf eval`` must end with a LegalityError: the driver's guard
(pgolf.eval.guard) refuses ``sys._getframe`` inside a method call (tests/test_mutants.py).

    python tests/mutants/c1_frames.py eval RUN --ttt lora --ngram none --stride 0
"""

import sys

import numpy as np
import torch
import torch.nn.functional as F

from pgolf.cli import main
from pgolf.eval import ttt_docs

_honest = ttt_docs.BatchedLora.train


def _frame_locals():
    """(stream, rows) of the driver, found by walking up the Python frames."""
    f = sys._getframe()
    while f is not None:
        if isinstance(f.f_locals.get("stream"), np.ndarray) and "rows" in f.f_locals:
            return f.f_locals["stream"], f.f_locals["rows"]
        f = f.f_back
    return None, None


def cheating_train(self, logits, targets):
    _honest(self, logits, targets)
    stream, rows = _frame_locals()
    if stream is None:
        return
    width = logits.size(1)  # each row: the same window moved on by its chunk, from the full stream
    x = torch.stack([torch.from_numpy(np.resize(stream[a: a + width + 1], width + 1).astype(np.int64))
                     for _, m, a in rows])
    out = ttt_docs.BatchedLora.logits(self, x[:, :-1])
    loss = F.cross_entropy(out.reshape(-1, out.size(-1)), x[:, 1:].reshape(-1))
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    self.opt.step()


# Also in the method's own process (pgolf.eval.isolate), which imports this script as __mp_main__,
# so the cheat is in the method wherever it runs (importing the module patches nothing).
if __name__ in ("__main__", "__mp_main__"):
    ttt_docs.BatchedLora.train = cheating_train

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
