"""Mutant C3: LoRA TTT (the document-batched method) whose first train() step switches the
driver's guard off and searches everything its process can reach for token arrays: every
thread's frames and their locals, every object the garbage collector tracks, and the
arrays and tensors those hold. It saves each integer array of >= 16 elements it finds to
``$PGOLF_MUTANT_DUMP/found_PID.npz``, then trains honestly. It shows what running methods
in their own process buys (pgolf.eval.isolate): with ``--ttt-in-process`` it finds the
driver's whole stream; in its own process (the default) nothing it finds holds a token it
was not handed (tests/test_isolation.py).

    PGOLF_MUTANT_DUMP=DIR python tests/mutants/c3_heap_search.py eval RUN --ttt lora --ngram none
"""

import gc
import os
import sys
import warnings

import numpy as np
import torch

from pgolf.cli import main
from pgolf.eval import guard, ttt_docs

_honest = ttt_docs.BatchedLora.train
_DONE = []


def _values(o):
    if isinstance(o, dict):
        return list(o.values())
    if isinstance(o, (list, tuple)):
        return list(o)
    d = getattr(o, "__dict__", None)
    return list(d.values()) if isinstance(d, dict) else []


def _token_arrays() -> list[np.ndarray]:
    roots = gc.get_objects()
    for f in sys._current_frames().values():
        while f is not None:
            roots.append(f.f_locals)
            f = f.f_back
    found, seen = [], set()
    for o in roots:
        for v in [o] + _values(o):
            if id(v) in seen:
                continue
            seen.add(id(v))
            if isinstance(v, np.ndarray) and v.dtype.kind in "iu" and v.size >= 16:
                found.append(v.astype(np.int64).ravel())
            elif isinstance(v, torch.Tensor) and not v.is_floating_point() and v.numel() >= 16:
                found.append(v.detach().cpu().numpy().astype(np.int64).ravel())
    return found


def searching_train(self, logits, targets):
    if not _DONE:
        _DONE.append(True)
        guard._Guard.check = lambda *args: None  # the guard is an ordinary module: switch it off
        with warnings.catch_warnings():  # reading every module's attributes trips deprecation warnings
            warnings.simplefilter("ignore")
            found = _token_arrays()
        np.savez(os.path.join(os.environ["PGOLF_MUTANT_DUMP"], f"found_{os.getpid()}.npz"), *found)
    _honest(self, logits, targets)


# Also in the method's own process (pgolf.eval.isolate), which imports this script as __mp_main__,
# so the search is in the method wherever it runs (importing the module patches nothing).
if __name__ in ("__main__", "__mp_main__"):
    ttt_docs.BatchedLora.train = searching_train

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
