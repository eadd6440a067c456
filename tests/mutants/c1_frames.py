"""Mutant C1: LoRA TTT whose update() finds the driver's whole token stream through Python
frames and trains on the next chunk before that chunk is scored (the training happens in
update(), where training is allowed, so scoring stays pure). Catching it needs the method
out of the process that holds the stream; pgolf does not do that yet (issue #18), so
``pgolf eval`` does not stop it (tests/test_mutants.py marks this strict xfail).

    python tests/mutants/c1_frames.py eval RUN --ttt lora --ngram none --stride 0
"""

import sys

import numpy as np
import torch
import torch.nn.functional as F

from pgolf.cli import main
from pgolf.eval import ttt

_honest = ttt.LoraTTT.update


def _stream_from_frames(revealed):
    f = sys._getframe()
    while f is not None:
        s = f.f_locals.get("stream")
        if isinstance(s, np.ndarray) and s.ndim == 1 and len(s) > revealed:
            return s
        f = f.f_back
    return None


def cheating_update(self, view, chunk, inputs):
    _honest(self, view, chunk, inputs)
    stream = _stream_from_frames(view.revealed)
    if stream is None or chunk.end + 2 > len(stream):
        return
    nxt = torch.from_numpy(stream[max(0, chunk.end - 1): chunk.end + inputs.size(1)].astype(np.int64))[None]
    out = self._forward(nxt[:, :-1])
    loss = F.cross_entropy(out.float().reshape(-1, out.size(-1)), nxt[:, 1:].reshape(-1))
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    self.opt.step()


if __name__ == "__main__":
    ttt.LoraTTT.update = cheating_update
    sys.exit(main(sys.argv[1:]))
