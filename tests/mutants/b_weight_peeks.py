"""Mutant B: a causal n-gram whose blend weight looks at the target (0.5 where the n-gram
gives the target more probability than the network, else 0.05), with the mixed log-prob
recomputed so that every certificate stays self-consistent. ``pgolf eval`` must end with
one LegalityError line.

    python tests/mutants/b_weight_peeks.py eval RUN --ngram causal --stride 0
"""

import sys

import numpy as np

from pgolf.cli import main
from pgolf.eval import ngram

_honest = ngram.causal_logprobs


def cheating_causal_logprobs(tokens, logp, entropy, *args, **kw):
    out = _honest(tokens, logp, entropy, *args, **kw)
    if "lam" in out and len(out["lam"]):
        p_nn, p_ng = np.exp(np.asarray(logp, np.float64)), np.exp(out["logp_ng"])
        out["lam"] = np.where(p_ng > p_nn, 0.5, 0.05)
        out["logp_mix"] = np.log((1 - out["lam"]) * p_nn + out["lam"] * p_ng)
        out["nats_mix"] = -float(out["logp_mix"].sum())
    return out


# Also in the method's own process (pgolf.eval.isolate), which imports this script as __mp_main__,
# so the cheat is in the method wherever it runs (importing the module patches nothing).
if __name__ in ("__main__", "__mp_main__"):
    ngram.causal_logprobs = cheating_causal_logprobs

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
