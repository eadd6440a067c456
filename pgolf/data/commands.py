"""``pgolf data``: build, inspect, check and download token datasets.

Subcommands (each has ``--help``)::

    pgolf data build --text docs.jsonl --out data/mine --val-docs 50   # text -> tokenizer + shards
    pgolf data build --default [--out DIR]                             # the embedded default corpus
    pgolf data stats DIR [--tokenizer FILE] [--json]                   # files/tokens/docs/bytes per split
    pgolf data check DIR [--tokenizer FILE]                            # validate every shard (exit 0/1)
    pgolf data fineweb --out DIR [--train-shards N] [--variant sp1024] # official cached FineWeb shards

Heavy modules are imported inside the handlers so ``pgolf --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys

from pgolf.config import flag_number


def register(subparsers) -> None:
    """Add ``pgolf data`` and its subcommands to the top-level parser."""
    data = subparsers.add_parser("data", help="build, inspect, check and download token datasets",
                                 description="Build, inspect, check and download datasets of challenge-format token shards.")
    sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    _add_build(sub)
    _add_stats(sub)
    _add_check(sub)
    _add_fineweb(sub)
    data.set_defaults(func=lambda args: (data.print_help(), 2)[1])


def _add_build(sub) -> None:
    p = sub.add_parser(
        "build", help="text files -> tokenizer + shards (or the embedded default corpus)",
        description="Tokenize .txt/.jsonl documents into challenge-format shards. The first --val-docs "
        "documents are validation. Unless --tokenizer is given, a SentencePiece BPE tokenizer is trained with "
        "the official sp1024 settings on the training documents. Output: DIR/tokenizer.model, "
        "DIR/fineweb_{val,train}_NNNNNN.bin, DIR/build.json. A .txt file is one document (see --txt-docs); "
        "a .jsonl file has one {\"text\": ...} document per line.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", nargs="+", metavar="PATH", help=".txt/.jsonl files or folders of them")
    src.add_argument("--default", action="store_true", help="build the embedded default corpus (Python's own documentation)")
    p.add_argument("--out", metavar="DIR", help="output folder (required with --text; with --default defaults to the cache folder)")
    p.add_argument("--vocab-size", type=flag_number(int, 2, 65536), default=None, help="tokenizer vocabulary size when training one (default 1024)")
    p.add_argument("--val-docs", type=flag_number(), default=None, help="number of leading documents that form the validation split (default 50; not with --default)")
    p.add_argument("--tokenizer", metavar="FILE", help="use this SentencePiece model instead of training one (copied to DIR/tokenizer.model)")
    p.add_argument("--txt-docs", choices=("file", "paragraphs", "lines"), default="file",
                   help="how .txt files split into documents: whole file (default), blank-line paragraphs, or lines")
    p.add_argument("--caseops", choices=("v1",), default=None,
                   help="apply the record's reversible CaseOps case transform before tokenizing; trains a lossless "
                   "tokenizer and writes per-token original-byte files fineweb_{val,train}_bytes_NNNNNN.bin")
    p.add_argument("--shard-tokens", type=flag_number(int, 1), default=100_000_000, help="maximum tokens per shard file (default 100,000,000)")
    p.add_argument("--force", action="store_true", help="replace an existing dataset in DIR")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_build)


def _add_stats(sub) -> None:
    p = sub.add_parser(
        "stats", help="files, tokens, documents and BPB bytes per split",
        description="Per split: shard files, tokens, documents (BOS count) and BPB bytes over the targets t[1:] "
        "of each file, summed. Bytes need a tokenizer (default DIR/tokenizer.model).",
    )
    p.add_argument("data", metavar="DIR", help="data folder, or a glob pattern of shard files (quote it)")
    p.add_argument("--tokenizer", metavar="FILE", help="SentencePiece model for byte counts (default DIR/tokenizer.model)")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    p.set_defaults(func=cmd_stats)


def _add_check(sub) -> None:
    p = sub.add_parser(
        "check", help="validate every shard (exit 0 if all are well-formed, else 1)",
        description="Validate every shard: magic, version, header token count against the file size, and token "
        "ids below the vocabulary size (from --vocab-size, else --tokenizer, else DIR/tokenizer.model when present). "
        "With --tokenizer on a folder, the tokenizer is also compared with the one the data was built with "
        "(build.json's sha256, else DIR/tokenizer.model): a mismatch is one line and exit 2.",
    )
    p.add_argument("data", metavar="DIR", help="data folder, or a glob pattern of shard files (quote it)")
    p.add_argument("--tokenizer", metavar="FILE", help="SentencePiece model to check the data against "
                   "(default DIR/tokenizer.model)")
    p.add_argument("--vocab-size", type=flag_number(int, 1, 65536), default=None, help="vocabulary size to check token ids against")
    p.set_defaults(func=cmd_check)


def _add_fineweb(sub) -> None:
    from pgolf.data import fineweb as spec

    p = sub.add_parser(
        "fineweb", help="download the official cached FineWeb shards and tokenizer",
        description="Download the parameter-golf challenge's cached FineWeb shards (all validation shards and the "
        "first N training shards) and the tokenizer from the Hugging Face Hub into DIR (DIR/tokenizer.model, "
        "DIR/fineweb_*.bin). Resumable: files already present and valid are skipped and partial files continue "
        "where they stopped. Honours HF_ENDPOINT.",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--train-shards", type=flag_number(int, 0, 10_000), default=1, help="number of training shards (100M tokens each; default 1)")
    p.add_argument("--variant", default=spec.DEFAULT_VARIANT,
                   help=f"tokenizer family: spN, e.g. sp1024, sp8192, or sp8192-caseops (= {spec.CASEOPS_VARIANT}, with "
                   f"per-token byte files) (default {spec.DEFAULT_VARIANT})")
    p.add_argument("--repo-id", default=None, help="dataset repository (default: by variant; "
                   + ", ".join(f"{r} for {v}" for v, r in spec.VARIANT_REPOS.items()) + f"; else {spec.DEFAULT_REPO_ID})")
    p.add_argument("--remote-root", default=spec.DEFAULT_REMOTE_ROOT, help=f"folder of the export inside the repo (default {spec.DEFAULT_REMOTE_ROOT!r})")
    p.add_argument("--revision", default="main", help="branch, tag or commit (default main)")
    p.add_argument("--endpoint", default=None, help="Hub endpoint (default $HF_ENDPOINT or https://huggingface.co)")
    p.add_argument("--retries", type=flag_number(int, 0, 100), default=3, help="retries per file after network errors (default 3)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_fineweb)


def cmd_build(args: argparse.Namespace) -> int:
    from pgolf.data.build import build_from_paths, format_summary
    from pgolf.errors import PgolfError

    show = not args.quiet
    if args.default:
        from pgolf.data.corpus import build_default, default_cache_dir

        if args.tokenizer or args.vocab_size or args.val_docs is not None or args.txt_docs != "file" or args.caseops:
            raise PgolfError("--default fixes its own tokenizer and split; --tokenizer/--vocab-size/--val-docs/--txt-docs/--caseops do not apply")
        result = build_default(args.out or default_cache_dir(), force=args.force, show_progress=show)
    else:
        if not args.out:
            raise PgolfError("--out DIR is required with --text")
        result = build_from_paths(args.text, args.out, txt_docs=args.txt_docs, val_docs=50 if args.val_docs is None else args.val_docs, vocab_size=args.vocab_size,
                                  tokenizer=args.tokenizer, shard_tokens=args.shard_tokens, force=args.force, show_progress=show,
                                  caseops=args.caseops)
    print(format_summary(result))
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from pgolf.data.stats import dataset_stats, default_tokenizer

    tokenizer = args.tokenizer or default_tokenizer(args.data)
    stats = dataset_stats(args.data, tokenizer)
    if tokenizer is None:
        stats["note"] = "no tokenizer (pass --tokenizer FILE or put DIR/tokenizer.model): bytes not computed"
    if args.json:
        print(json.dumps(stats))
        return 0
    print(f"{'split':6s} {'files':>6s} {'tokens':>14s} {'docs':>10s} {'bytes':>14s}")
    for split, s in stats["splits"].items():
        b = f"{s['bytes']:,}" if s["bytes"] is not None else "-"
        print(f"{split:6s} {s['files']:>6,} {s['tokens']:>14,} {s['docs']:>10,} {b:>14s}")
    if tokenizer is None:
        print(f"note: {stats['note']}", file=sys.stderr)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from pgolf.data.stats import check_dataset, default_tokenizer

    from pathlib import Path

    vocab, tok = args.vocab_size, args.tokenizer or default_tokenizer(args.data)
    if tok is not None:
        from pgolf.data.tokenizer import load_tokenizer

        vocab = load_tokenizer(tok).vocab_size() if vocab is None else vocab
    found = check_dataset(args.data, vocab)
    if args.tokenizer and Path(args.data).is_dir():
        from pgolf.data.fingerprint import check_tokenizer

        check_tokenizer(args.data, args.tokenizer)
    tokens = sum(n for _, n in found)
    against = f", ids < {vocab}" if vocab is not None else " (vocab unknown: ids not checked)"
    print(f"ok: {len(found)} shards, {tokens:,} tokens{against}")
    return 0


def cmd_fineweb(args: argparse.Namespace) -> int:
    from pgolf.data.fineweb import download_fineweb

    result = download_fineweb(args.out, train_shards=args.train_shards, variant=args.variant, repo_id=args.repo_id,
                              remote_root=args.remote_root, revision=args.revision, endpoint=args.endpoint,
                              retries=args.retries, show_progress=not args.quiet)
    print(result.summary())
    return 0
