"""Wall time of one global SGD epoch (pgolf.eval.ttt_common.GlobalSGD) on 1 and on 2 processes.

The global TTT step (``--ttt global``, and the epoch between the phases of ``phased``) is
data-parallel over a process group: each step's sequences are cut into fixed units
(``GlobalSGD.unit_seqs``), dealt to ranks, and the gradients summed in float64. This runs the same epoch (the tiny preset's model, random weights, the first
``--tokens`` validation tokens, one thread per process) under ``torch.distributed.run``
with 1 and with 2 gloo processes and prints the seconds of each (the slowest rank), and
the largest weight difference between the two runs after the epoch.

    python benchmarks/global_sgd_ranks.py --data ../shared/data/fineweb_sp1024 --tokens 65536
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = """
import json, sys, time
sys.path.insert(0, {repo!r})
import torch, torch.distributed as dist
from pgolf.collectives import max_float
from pgolf.data.shards import load_tokens
from pgolf.eval.ttt_common import GlobalSGD
from pgolf.model.gpt import GPT
from pgolf.presets import get_preset
dist.init_process_group("gloo")
torch.set_num_threads(1)
cfg = get_preset("tiny")
torch.manual_seed(0)
model = GPT(cfg.model)
tokens = load_tokens({data!r}, "val")[:{tokens}]
sgd = GlobalSGD(model, cfg.ttt, cfg.train.seq_len, 1, False)
t0 = time.perf_counter()
sgd.train(tokens, 1, len(tokens))
seconds = max_float(time.perf_counter() - t0)
if dist.get_rank() == 0:
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    torch.save(flat, {out!r} + ".pt")
    json.dump({{"seconds": seconds, "trained": sgd.trained}}, open({out!r}, "w"))
dist.barrier()
dist.destroy_process_group()
"""


def run(nproc: int, args, tmp: Path) -> dict:
    out = tmp / f"r{nproc}.json"
    script = tmp / f"child{nproc}.py"
    script.write_text(CHILD.format(repo=str(REPO), data=args.data, tokens=args.tokens, out=str(out)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone", str(script)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{nproc} process(es) failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.read_text())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="data directory with fineweb_val_*.bin")
    p.add_argument("--tokens", type=int, default=65536, help="validation tokens in the epoch (default 65536)")
    args = p.parse_args(argv)
    import torch

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        res = {n: run(n, args, tmp) for n in (1, 2)}
        diff = float((torch.load(tmp / "r1.json.pt") - torch.load(tmp / "r2.json.pt")).abs().max())
    for n, r in res.items():
        print(f"{n} process(es): {r['seconds']:.2f} s for {r['trained']:,} trained tokens")
    print(f"speed-up {res[1]['seconds'] / res[2]['seconds']:.2f}x; max weight difference after the epoch {diff:.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
