"""CLI: ``pgolf frontier`` (see :mod:`pgolf.pipeline.frontier`), model size against bits.

    pgolf frontier --preset tiny --data DIR --out runs/frontier --wallclock 600 \\
        --size model_dim=128,num_layers=4 --size model_dim=256,num_layers=6 \\
        --model-bytes 1000000 --schemes record,turbo-rd
    torchrun --standalone --nproc_per_node=8 -m pgolf frontier --preset seed --data DIR \\
        --size num_layers=11 --size num_layers=13 --wallclock 600 --schemes record,turbo-rd

Heavy imports happen inside the command function so ``pgolf --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys

from pgolf.eval.harness import NGRAM_MODES, TTT_MODES
from pgolf.pipeline.frontier import QAT_MODES, SCHEMES, TOTAL_BUDGET

DESCRIPTION = f"""\
For each --size, train one model (same preset, data, --wallclock cap and --seed); for each
of --schemes, quantize it to the model-byte budget and evaluate the decoded artifact
(sliding windows; n-gram and TTT off unless asked). turbo-rd fills the budget through its
byte target; record and intN take the largest bit setting that fits (record: matrices
int b with embeddings int b+1, b = 8..2; intN: every role int b, b = N..2), else the cell
reads "does not fit". The float model of each size is evaluated with the same settings
(pre-quant bpb).

Each (size, scheme) is a folder OUT/<size>/<scheme>/ (artifact.pgz, quant.json,
eval.json, cell.json); rerunning the same command skips finished sizes and cells, so a
killed run resumes (an unfinished training continues from its checkpoint). The table is
OUT/frontier.md and OUT/frontier.json (params, steps, pre-quant bpb, bytes, bits/param,
post-quant bpb), and OUT/frontier.png plots post-quant bpb against parameters, one line
per scheme. The budget is the artifact alone (--model-bytes), by default
{TOTAL_BUDGET:,} minus the counted code bytes (len(train_gpt.py)) of each cell.
Calibration (GPTQ Hessians for record/turbo-rd) is reported per cell and is not part of
the --wallclock cap."""


def cmd_frontier(args: argparse.Namespace) -> int:
    from pgolf.pipeline.commands import resolve_data
    from pgolf.pipeline.frontier import FrontierSpec, parse_schemes, parse_size, run_frontier

    data_dir, tok = resolve_data(args.data, args.tokenizer)
    from pgolf.data.fingerprint import check_tokenizer

    note = check_tokenizer(data_dir, tok, allow_mismatch=args.allow_tokenizer_mismatch)
    if note and os.environ.get("RANK", "0") == "0":
        print(note, file=sys.stderr)
    spec = FrontierSpec(
        preset=args.preset, sizes=[parse_size(s) for s in args.size], schemes=parse_schemes(args.schemes),
        data_dir=str(data_dir), tokenizer=str(tok), wallclock=args.wallclock, model_bytes=args.model_bytes,
        seed=args.seed, qat=args.qat, sets=list(args.set), stride=args.stride, ngram=args.ngram, ttt=args.ttt,
        eval_tokens=args.eval_tokens, calib_batches=args.calib_batches)
    if args.dry_run:
        from pgolf.pipeline.frontier import check_spec

        for size, _, params in check_spec(spec):
            print(f"{size.name}: {params:,} params")
        return 0
    from pgolf.submit.budget import run_code_bytes

    run_frontier(spec, args.out, run_code_bytes)
    return 0


def register(sub) -> None:
    p = sub.add_parser("frontier", help="model size against bits at a fixed byte and time budget (resumable)",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny", help="config preset every size starts from: seed | tiny | record "
                                                    "(default: tiny)")
    p.add_argument("--size", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE...]", required=True,
                   help="one model size as config overrides, e.g. model_dim=256,num_layers=6 (repeat for each "
                        "size; any config key, checked before anything runs)")
    p.add_argument("--schemes", default="record,turbo-rd",
                   help=f"comma-separated quantization schemes from {', '.join(SCHEMES)} (default: record,turbo-rd)")
    p.add_argument("--model-bytes", type=int, metavar="N",
                   help=f"artifact byte budget per cell (default: {TOTAL_BUDGET:,} minus the cell's counted code bytes)")
    p.add_argument("--wallclock", type=float, metavar="SECONDS",
                   help="training wall-clock cap per size (default: the preset's max_wallclock_seconds)")
    p.add_argument("--seed", type=int, help="training seed, the same for every size (default: the preset's)")
    p.add_argument("--qat", choices=QAT_MODES, default="off",
                   help="QAT while training each size: off (float training, default), preset (as the preset "
                        "says), or a scheme whose fake quantization to train with (turbo-rd: its rotated "
                        "uniform grid; record/intN: their per-row int grids)")
    p.add_argument("--data", help="folder with fineweb_train_*.bin / fineweb_val_*.bin "
                                  "(default: the embedded default corpus)")
    p.add_argument("--tokenizer", help="SentencePiece model (default: DATA/tokenizer.model)")
    p.add_argument("--allow-tokenizer-mismatch", action="store_true",
                   help="go on when the tokenizer is not the one the data was built with (pgolf.data.fingerprint)")
    p.add_argument("--out", default="runs/frontier", help="frontier folder (default: runs/frontier)")
    p.add_argument("--stride", type=int, metavar="S",
                   help="sliding-window stride of every evaluation (default: the config's eval.stride; 0: "
                        "standard windows only)")
    p.add_argument("--ngram", choices=NGRAM_MODES, default="none",
                   help="n-gram cache mixed into the evaluations (default: none)")
    p.add_argument("--ttt", choices=TTT_MODES, default="none",
                   help="score-first test-time training in the evaluations (default: none)")
    p.add_argument("--eval-tokens", type=int, default=0, metavar="N",
                   help="evaluate on the first N validation tokens only (default 0: the whole split)")
    p.add_argument("--calib-batches", type=int, metavar="N",
                   help="record/turbo-rd: training batches for the GPTQ Hessians (default: quant.calib_batches, "
                        "16; 0 = round to nearest)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every size, repeatable (e.g. --set train.iterations=100000)")
    p.add_argument("--dry-run", action="store_true",
                   help="check every input, print each size's parameter count (smallest first) and stop")
    p.set_defaults(func=cmd_frontier)
