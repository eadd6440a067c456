"""CLI: ``pgolf run``, ``pgolf demo`` and ``pgolf report`` (see :mod:`pgolf.pipeline.run`).

    pgolf run --preset tiny --data DIR --tokenizer FILE --out runs/tiny --seeds 1,2
    torchrun --standalone --nproc_per_node=8 -m pgolf run --preset seed --data DIR --tokenizer FILE
    pgolf demo                      # embedded corpus, tiny preset, CPU, a few minutes
    pgolf report runs/tiny --baseline runs/base

Heavy imports happen inside the command functions so ``pgolf --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pgolf.config import flag_number
from pgolf.errors import ConfigError


def parse_seeds(text: str | None) -> list[int] | None:
    """``"1337,42,2024"`` → ``[1337, 42, 2024]``; ConfigError naming the bad item."""
    if not text:
        return None
    seeds = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            seeds.append(int(item))
        except ValueError:
            raise ConfigError(f"--seeds: {item!r} is not an integer (expected e.g. 1337,42,2024)") from None
    if not seeds:
        raise ConfigError(f"--seeds: no seeds in {text!r}")
    return seeds


def resolve_data(data: str | None, tokenizer: str | None) -> tuple[Path, Path]:
    """The data folder and tokenizer; the embedded default corpus when ``data`` is None."""
    if data is None:
        from pgolf.data.corpus import ensure_default_data

        data_dir = Path(ensure_default_data())
    else:
        data_dir = Path(data)
        if not data_dir.is_dir():
            raise ConfigError(f"--data {data_dir}: not a directory")
    tok = Path(tokenizer) if tokenizer else data_dir / "tokenizer.model"
    if not tok.is_file():
        raise ConfigError(f"tokenizer {tok}: file not found (pass --tokenizer FILE)")
    return data_dir, tok


def cmd_run(args: argparse.Namespace) -> int:
    from pgolf.eval.commands import print_outputs
    from pgolf.pipeline.run import run_pipeline
    from pgolf.presets import resolve_config
    from pgolf.submit.budget import run_code_bytes

    from pgolf.train.tensorboard import follow, require

    if args.tensorboard:
        require()  # before anything is written
    cfg = resolve_config(args.preset, sets=args.set, env=os.environ)
    data_dir, tok = resolve_data(args.data, args.tokenizer)
    from pgolf.data.fingerprint import check_tokenizer

    note = check_tokenizer(data_dir, tok, model_vocab=cfg.model.vocab_size, allow_mismatch=args.allow_tokenizer_mismatch)
    if note and os.environ.get("RANK", "0") == "0":
        print(note, file=sys.stderr)
    out = Path(args.out or f"runs/{args.preset}")
    with follow(out, args.tensorboard):
        res = run_pipeline(cfg, data_dir, tok, out, seeds=parse_seeds(args.seeds), force=args.force,
                           report=not args.no_report, baseline=args.baseline, show_eval=print_outputs,
                           count_code=run_code_bytes)
    if res["env"].is_main:
        from pgolf.pipeline.demo import print_summary

        print_summary(out)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pgolf.eval.commands import print_outputs
    from pgolf.pipeline.demo import run_demo
    from pgolf.submit.budget import run_code_bytes

    run_demo(args.out, run_code_bytes, show_eval=print_outputs, wallclock=args.wallclock, force=args.force)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pgolf.pipeline.report import write_report

    path = write_report(args.run_dir, baseline=args.baseline)
    print(f"wrote {path} (and report.json, PNG plots beside it)")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "run", help="train, quantize, evaluate and report in one go (stages already done are skipped)",
        description="Chain train -> EMA -> quantize (artifact + budget check) -> decode the artifact -> "
                    "standard, sliding and n-gram evaluation -> report. Stages whose outputs exist and are "
                    "valid are skipped, so an interrupted run continues; --force redoes everything. Works "
                    "under torchrun (all ranks train/evaluate, rank 0 quantizes and reports).")
    p.add_argument("--preset", default="tiny", help="config preset: seed | tiny | record (default: tiny)")
    p.add_argument("--data", help="folder with fineweb_train_*.bin / fineweb_val_*.bin "
                                  "(default: the embedded default corpus, built and cached on first use)")
    p.add_argument("--tokenizer", help="SentencePiece model (default: DATA/tokenizer.model)")
    p.add_argument("--out", help="run directory (default: runs/PRESET)")
    p.add_argument("--seeds", help="comma-separated seeds, e.g. 1337,42,2024: one run per seed in "
                                   "OUT/seed_<s>/ plus a mean/std report (default: the config's seed, in OUT)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, repeatable (e.g. --set max_wallclock_seconds=300 --set eval.ngram=none)")
    p.add_argument("--force", action="store_true", help="redo every stage even if its outputs exist")
    p.add_argument("--allow-tokenizer-mismatch", action="store_true",
                   help="run even when the tokenizer is not the one the data was built with (pgolf.data.fingerprint)")
    p.add_argument("--baseline", help="another run directory to compare against in the report (Welch t-test)")
    p.add_argument("--no-report", action="store_true", help="skip report.md and the plots")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write the training scalars as TensorBoard events (OUT/tb/, or OUT/seed_<s>/tb/)")
    p.set_defaults(func=cmd_run)

    d = sub.add_parser(
        "demo", help="the whole pipeline on the embedded default corpus, tiny preset, CPU (a few minutes)",
        description="Build (or reuse) the embedded default corpus, train the tiny preset on the CPU under a "
                    "short wall-clock cap, quantize, evaluate the decoded artifact (standard windows and the causal "
                    "n-gram; no sliding-window pass, which would take longer than the training: pgolf eval RUN --artifact "
                    "adds it), write the report and print a summary table. Works offline.")
    d.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
    d.add_argument("--wallclock", type=flag_number(float, 1, 1e7), default=None,
                   help="training wall-clock cap in seconds (default: the demo's, sized for < 5 min total)")
    d.add_argument("--force", action="store_true", help="redo every stage")
    d.set_defaults(func=cmd_demo)

    r = sub.add_parser(
        "report", help="write report.md, report.json and PNG plots for a run directory",
        description="Report of a run (one seed or OUT/seed_<s>/ folders): loss curves, val_bpb per stage, "
                    "bits/bytes per tensor role, mean ± std over seeds and, with --baseline, Welch's t-test "
                    "(the challenge requires p < 0.01 for a 0.005-nat improvement).")
    r.add_argument("run_dir", help="run directory")
    r.add_argument("--baseline", help="baseline run directory for the Welch t-test")
    r.set_defaults(func=cmd_report)
