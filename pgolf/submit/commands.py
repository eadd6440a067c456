"""CLI: ``pgolf submit RUN_DIR --out DIR --name ... --author ... --github-id ...``.

Writes the challenge's records folder (see :mod:`pgolf.submit.records`): README.md,
submission.json, train_gpt.py (generated from the package source) and the train logs.
Refuses, with one line and exit 1, an over-budget run or a leaky score.
"""

from __future__ import annotations

import argparse


def cmd_submit(args: argparse.Namespace) -> int:
    from pgolf.runlock import run_lock
    from pgolf.submit.records import make_records

    from pathlib import Path

    from pgolf.errors import PgolfError
    from pgolf.runlock import LOCK_NAME

    out = Path(args.out)
    with run_lock(args.out):  # the lock first: a live holder is named before anything else
        if not args.force and any(p.name != LOCK_NAME for p in out.iterdir()):
            raise PgolfError(f"{out}: exists and is not empty; pass --force to overwrite it, or another --out")
        sub = make_records(args.run_dir, args.out, name=args.name, author=args.author, github_id=args.github_id,
                           blurb=args.blurb or "", prefer=args.score)
    print(f"wrote {args.out}: val_bpb {sub['val_bpb']:.6f} ({sub['score_source']}, {len(sub['seeds'])} seed(s)), "
          f"bytes_total {sub['bytes_total']:,} (train_gpt.py {sub['bytes_code']:,} B)")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "submit", help="write a challenge records folder (README, submission.json, train_gpt.py, logs)",
        description="Turn a finished run (one seed or RUN_DIR/seed_<s>/) into a records folder in the "
                    "challenge's layout. train_gpt.py is one self-contained script generated from the package "
                    "source; bytes_total = largest artifact + len(train_gpt.py). Refuses when that exceeds "
                    "16,000,000 bytes or when the submitted val_bpb would come from a leaky n-gram mode.")
    p.add_argument("run_dir", help="finished run directory (pgolf run ...)")
    p.add_argument("--out", required=True, help="records folder to write, e.g. records/track_10min_16mb/NAME")
    p.add_argument("--name", required=True, help="submission name")
    p.add_argument("--author", required=True, help="author's name")
    p.add_argument("--github-id", required=True, help="author's GitHub id")
    p.add_argument("--force", action="store_true", help="write into an existing non-empty --out folder")
    p.add_argument("--blurb", default="", help="one-paragraph description")
    p.add_argument("--score", choices=("auto", "ttt", "ngram", "sliding"), default="auto",
                   help="which val_bpb to submit: auto = the score-first TTT headline if evaluated, else the "
                        "n-gram mixture if evaluated, else the sliding-window neural number; leaky modes are "
                        "always refused")
    p.set_defaults(func=cmd_submit)
