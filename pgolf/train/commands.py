"""``pgolf train``: train a preset (optionally overridden) into a run directory.

    pgolf train --preset tiny --data DATA_DIR [--tokenizer FILE] [--out RUN_DIR] [--set k=v ...]
    torchrun --nproc_per_node=8 -m pgolf train --preset seed --data DATA_DIR --out runs/seed
    pgolf train --resume RUN_DIR [--set k=v ...]        # continue a stopped run
    pgolf train --preset seed --dry-run                 # resolved config JSON + "params: N"

The challenge's environment variables (NUM_LAYERS, MODEL_DIM, ITERATIONS, VE_LAYERS,
MUON_WD, ...; every one the seed's script reads, see pgolf.config.ENV_OVERRIDES) override
the preset, and ``--set`` overrides both; a look-alike that is not read gets a warning.
DATA_PATH, TOKENIZER_PATH and RUN_ID stand in for --data, --tokenizer and --out runs/RUN_ID.
The tokenizer is checked against the data before training (pgolf.data.fingerprint: same
sha256 as the data's build.json / tokenizer.model, vocabulary bound; exit 2, or
--allow-tokenizer-mismatch). Without --preset: tiny. The run folder is locked while training (pgolf.runlock); Ctrl-C/SIGTERM checkpoints and
exits 130; under torchrun the micro-batch is fitted to WORLD_SIZE (pgolf.presets). --tensorboard also writes
the logged scalars as TensorBoard events in RUN_DIR/tb/ (pgolf.train.tensorboard). torch is imported only when
the command runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from pgolf.config import flag_number
from pgolf.errors import PgolfError

#: The preset without --preset (the same as pgolf run's).
DEFAULT_PRESET = "tiny"
#: Exit status after Ctrl-C (SIGINT) or SIGTERM stopped training (128 + SIGINT, as shells report it).
INTERRUPTED = 130


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model (Muon + AdamW, EMA/SWA, wall-clock cap; torchrun for several GPUs)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--preset", default=None, help="config preset: seed | tiny | record (default: tiny, as pgolf run; "
                   "ignored with --resume)")
    p.add_argument("--data", metavar="DIR", help="data folder with fineweb_train_*.bin / fineweb_val_*.bin shards")
    p.add_argument("--tokenizer", metavar="FILE", help="SentencePiece model (default: DIR/tokenizer.model)")
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (default: runs/<preset>)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set max_wallclock_seconds=300 (repeatable)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the stopped run in RUN_DIR from its checkpoint.pt")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and parameter count; do not train")
    p.add_argument("--allow-tokenizer-mismatch", action="store_true",
                   help="train even when the tokenizer is not the one the data was built with (pgolf.data.fingerprint)")
    p.add_argument("--stop-after", type=flag_number(), metavar="STEPS",
                   help="stop with a checkpoint once STEPS optimizer steps are done (schedule unchanged)")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write the logged scalars as TensorBoard events in RUN_DIR/tb/ while training "
                        "(needs the tensorboard package; pgolf.train.tensorboard)")
    p.set_defaults(func=run)


def _resolve(args):
    from pgolf.config import apply_sets, validate
    from pgolf.presets import resolve_config

    if args.resume:
        from pgolf.train.checkpoint import load_run_config

        from pgolf.presets import explicit_keys, fit_micro_batch, world_size

        cfg, extra = load_run_config(args.resume)
        apply_sets(cfg, args.sets)
        validate(cfg)
        note = fit_micro_batch(cfg, world_size(os.environ), explicit_keys(cfg, args.sets, {}))
        if note and os.environ.get("RANK", "0") == "0":
            print(note, file=sys.stderr)
        data = args.data or extra.get("data_dir")
        tok = args.tokenizer or extra.get("tokenizer")
        return cfg, data, tok, Path(args.resume)
    cfg = resolve_config(args.preset or DEFAULT_PRESET, args.sets, env=os.environ)
    # The challenge's DATA_PATH / TOKENIZER_PATH / RUN_ID stand in for absent flags.
    data, tok = args.data or os.environ.get("DATA_PATH"), args.tokenizer or os.environ.get("TOKENIZER_PATH")
    if data and not tok:
        tok = str(Path(data) / "tokenizer.model")
    run_id = os.environ.get("RUN_ID")
    out = Path(args.out) if args.out else Path("runs") / (run_id or cfg.preset)
    return cfg, data, tok, out


def run(args) -> int:
    cfg, data, tok, out = _resolve(args)
    if args.dry_run:
        from pgolf.model.gpt import GPT

        import torch

        from pgolf.train.groups import assign_groups

        with torch.device("meta"):
            model = GPT(cfg.model)
        groups = assign_groups([n for n, _ in model.named_parameters()], cfg.train, cfg.model.tie_embeddings)
        print(json.dumps({**cfg.to_dict(), "optimizer_groups": [g.to_dict() for g in groups]}, indent=2))
        print(f"params: {sum(p.numel() for p in model.parameters())}")
        return 0
    if args.tensorboard:
        from pgolf.train.tensorboard import require

        require()  # before anything is written
    if not data:
        raise PgolfError("train needs --data DIR (a folder with fineweb_train_*.bin and fineweb_val_*.bin shards)")
    if not Path(data).is_dir():
        raise PgolfError(f"{data}: data directory not found")
    if not Path(tok).is_file():
        raise PgolfError(f"{tok}: tokenizer file not found (pass --tokenizer FILE)")
    from pgolf.data.fingerprint import check_tokenizer

    note = check_tokenizer(data, tok, model_vocab=cfg.model.vocab_size, allow_mismatch=args.allow_tokenizer_mismatch)
    if note and os.environ.get("RANK", "0") == "0":
        print(note, file=sys.stderr)
    from pgolf.runlock import run_lock
    from pgolf.train.tensorboard import follow
    from pgolf.train.trainer import train

    with run_lock(out), follow(out, args.tensorboard):
        summary = train(cfg, data, tok, out, resume=bool(args.resume), stop_after=args.stop_after)
    main = int(os.environ.get("RANK", "0")) == 0
    if main:
        print(json.dumps(summary))
    if summary.get("stopped") and (args.stop_after is None or summary["steps"] < args.stop_after):
        if main:  # Ctrl-C / SIGTERM: the checkpoint is written; `train && quantize` must not carry on
            print(f"pgolf: interrupted at step {summary['steps']}; checkpoint saved; continue with: "
                  f"pgolf train --resume {out}", file=sys.stderr)
        return INTERRUPTED
    return 0
