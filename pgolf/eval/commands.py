"""``pgolf eval``: neural val_bpb (standard, sliding windows), an n-gram cache and score-first TTT.

    pgolf eval RUN_DIR_OR_ARTIFACT [--stride 64] [--ngram causal|two-pass|loo|none]
               [--ttt none|lora|global|phased] [--per-token FILE.npy] [--set ttt.KEY=VALUE]
               [--orders 2-12] [--data DIR] [--tokenizer FILE] [--out FILE] [--max-tokens N]
               [--ttt-in-process]
    pgolf eval --verify ARTIFACT --data DIR [--out FOLDER] [--force] [same settings flags]

A run directory evaluates its ``model.pt`` (``--artifact``: its ``artifact.pgz``); a
``.pgz`` file is decoded first. Data and tokenizer come from the flags, else from the
run's ``config.json``, else ``DATA_DIR/tokenizer.model``. Writes ``eval.json``
atomically (default: in the run directory / beside the artifact) and prints a table.
Leaky n-gram modes are labelled "leaky (not a valid compression rate)" wherever their
number appears. TTT runs inside the causal harness (:mod:`pgolf.eval.stream`), then the
causal n-gram mixes with its outputs; ``score`` names the headline (TTT + n-gram > TTT
> n-gram > sliding > standard, legal methods only). Under ``torchrun`` the windows (and
TTT documents) are shared across ranks; rank 0 runs the n-gram pass, writes and prints.
eval.json is bound to the file it measured (``artifact_sha256``, ``artifact_bytes``,
``model_fingerprint``; :mod:`pgolf.quant.binding`) and written under the run folder's lock
(:mod:`pgolf.runlock`); an artifact whose run folder holds another model is refused. The
tokenizer is checked first against the data's and the run's (:mod:`pgolf.data.fingerprint`,
exit 2 unless ``--allow-tokenizer-mismatch``). ``--verify`` scores someone else's artifact
with pgolf's eval/ttt defaults plus your flags, ignoring the settings embedded in it, on
your --data, into ``--out FOLDER/eval.json`` (:mod:`pgolf.eval.verify`).
:func:`run_eval` is the same as a function; the evaluation itself is
:func:`pgolf.eval.harness.run_eval` (what the pipeline calls, without the table).
"""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path

from pgolf.config import flag_number
from pgolf.errors import ConfigError
from pgolf.eval import harness
from pgolf.eval.harness import NGRAM_MODES, TTT_MODES, check_orders


def parse_orders(text: str) -> tuple[int, int]:
    """``"2-12"`` -> (2, 12); ``"5"`` -> (5, 5)."""
    try:
        lo, _, hi = text.partition("-")
        a, b = int(lo), int(hi or lo)
    except ValueError:
        raise ConfigError(f"--orders expects MIN-MAX such as 2-12, got {text!r}") from None
    return check_orders((a, b), f"--orders {text!r}")


def run_eval(source, *, out=None, echo: bool = True, **options) -> dict:
    """``pgolf eval`` as a function: :func:`pgolf.eval.harness.run_eval` with ``out`` defaulting
    to ``eval.json`` in the run directory / beside the artifact and (``echo``) the table printed."""
    from pgolf.runlock import run_lock

    tokenizer_check(source, options.get("data_dir"), options.get("tokenizer"), options.pop("allow_tokenizer_mismatch", False))
    out = Path(out) if out else _default_out(Path(source))
    # eval.json written into a run folder: one writer at a time (pgolf.runlock)
    lock = run_lock(out.parent) if (out.parent / "config.json").is_file() else contextlib.nullcontext()
    with lock:
        evaluated, is_artifact = _evaluated_file(Path(source), options.get("artifact", False))
        before = _binding(evaluated, is_artifact)
        written = []
        result = harness.run_eval(source, out, show=lambda res, paths: written.extend(paths), **options)
        if written:  # rank 0 wrote eval.json: bind it to the file it measured
            if before is not None:
                from pgolf.quant.binding import BindingError, add_fields

                if _binding(evaluated, is_artifact) != before:
                    raise BindingError(f"{evaluated} changed during the evaluation; {out} is not bound to it, rerun")
                add_fields(out, before)
                result.update(before)
            if echo:
                print_outputs(result, written)
        return result


def tokenizer_check(source, data_dir=None, tokenizer=None, allow: bool = False) -> None:
    """Before evaluating: the tokenizer in use against the data's fingerprint and the run's own
    tokenizer, and the vocabulary bound (:func:`pgolf.data.fingerprint.check_tokenizer`; exit 2).
    Skipped where the inputs are missing: the harness names what is missing."""
    import os
    import sys

    from pgolf.data.fingerprint import check_tokenizer
    from pgolf.eval.loading import _run_extra

    src = Path(source)
    run = src if src.is_dir() else src.parent
    extra = _run_extra(run) if src.exists() else {}
    data = data_dir or extra.get("data_dir")
    if not data or not Path(data).is_dir():
        return
    tok = Path(tokenizer or extra.get("tokenizer") or Path(data) / "tokenizer.model")
    if not tok.is_file():
        return
    vocab = None
    if (run / "config.json").is_file():
        from pgolf.train.checkpoint import load_run_config

        vocab = load_run_config(run)[0].model.vocab_size
    note = check_tokenizer(data, tok, model_vocab=vocab, run_tokenizer=extra.get("tokenizer"), allow_mismatch=allow)
    if note and os.environ.get("RANK", "0") == "0":
        print(note, file=sys.stderr)


def _evaluated_file(source: Path, artifact: bool) -> tuple[Path, bool]:
    """The file an evaluation of ``source`` reads, and whether it is an artifact."""
    if source.is_dir():
        return (source / "artifact.pgz", True) if artifact else (source / "model.pt", False)
    return source, True


def _binding(path: Path, is_artifact: bool) -> dict | None:
    """eval.json's binding fields for ``path`` (pgolf.quant.binding); an artifact whose run folder
    holds another model is refused first. None when the file is missing (the harness says so)."""
    if not path.is_file():
        return None
    from pgolf.quant.binding import bind_file, check_artifact_model

    if is_artifact and (path.parent / "config.json").is_file():
        check_artifact_model(path, path.parent)
    return bind_file(path, is_artifact)


def print_outputs(result: dict, written) -> None:
    """The table of an evaluation and the files it wrote (``pgolf eval``, ``pgolf run``)."""
    print(format_table(result))
    for path in written:
        print(f"wrote {path}")


def _default_out(source: Path) -> Path:
    return source / "eval.json" if source.is_dir() else source.parent / "eval.json"


def format_table(res: dict) -> str:
    """The human-readable summary printed by ``pgolf eval``."""
    lines = [f"eval of {res['source']} ({res['source_kind']}): {res['tokens']:,} target tokens, "
             f"{res['bytes']:,} bytes, seq_len {res['seq_len']}",
             f"  {'method':<28}{'val_loss':>10}{'val_bpb':>10}"]
    std = res["neural"]["standard"]
    lines.append(f"  {'neural standard':<28}{std['val_loss']:>10.4f}{std['val_bpb']:>10.4f}")
    if "sliding" in res["neural"]:
        sl = res["neural"]["sliding"]
        lines.append(f"  {'neural sliding/' + str(sl['stride']):<28}{sl['val_loss']:>10.4f}{sl['val_bpb']:>10.4f}")
    ng = res.get("ngram") or {}
    if ng.get("mode", "none") != "none":
        name = f"n-gram {ng['mode']} {ng['orders'][0]}-{ng['orders'][1]}"
        label = ng.get("label") or ("valid" if ng.get("valid") else "leaky (not a valid compression rate)")
        lines.append(f"  {name:<28}{ng['val_loss']:>10.4f}{ng['val_bpb']:>10.4f}  {label}")
    tt = res.get("ttt") or {}
    if tt.get("mode", "none") != "none":
        lines.append(f"  {'ttt ' + tt['mode']:<28}{tt['val_loss']:>10.4f}{tt['val_bpb']:>10.4f}  score-first (valid)")
        if tt.get("ngram"):
            name = f"ttt {tt['mode']} + n-gram causal"
            lines.append(f"  {name:<28}{tt['ngram']['val_loss']:>10.4f}{tt['ngram']['val_bpb']:>10.4f}  valid")
    if res.get("score"):
        sc = res["score"]
        lines.append(f"  score ({sc['method']}): val_loss {sc['val_loss']:.4f} val_bpb {sc['val_bpb']:.4f}")
    t = res["timings"]
    lines.append("  time: " + ", ".join(f"{k[:-2]} {v:.1f}s" for k, v in t.items() if k.endswith("_s")))
    return "\n".join(lines)


def _cmd(args: argparse.Namespace) -> int:
    if args.ttt_in_process:
        os.environ["PGOLF_TTT_IN_PROCESS"] = "1"  # read by pgolf.eval.isolate.in_process, in this process only
    if args.verify:
        return _verify(args)
    if args.force:
        raise ConfigError("--force is for --verify's --out folder")
    run_eval(args.source, data_dir=args.data, tokenizer=args.tokenizer, stride=args.stride, ngram=args.ngram,
             orders=parse_orders(args.orders) if args.orders else None, out=args.out, max_tokens=args.max_tokens,
             seq_len=args.seq_len, batch_seqs=args.batch_seqs, artifact=args.artifact, device=args.device,
             progress=not args.quiet, ttt=args.ttt, per_token=args.per_token, sets=args.set,
             allow_tokenizer_mismatch=args.allow_tokenizer_mismatch)
    return 0


def _verify(args: argparse.Namespace) -> int:
    from pgolf.eval.verify import settings_line, verify

    if args.artifact:
        raise ConfigError("--verify evaluates the artifact file given; --artifact is for a run directory")
    result, written = verify(args.source, args.data, tokenizer=args.tokenizer, out=args.out, force=args.force,
                             sets=args.set, allow_tokenizer_mismatch=args.allow_tokenizer_mismatch,
                             stride=args.stride, ngram=args.ngram,
                             orders=parse_orders(args.orders) if args.orders else None,
                             max_tokens=args.max_tokens, seq_len=args.seq_len, batch_seqs=args.batch_seqs,
                             device=args.device, progress=not args.quiet, ttt=args.ttt, per_token=args.per_token)
    if written:
        print(settings_line(result))
        print_outputs(result, written)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval", help="val_bpb of a trained run or artifact: standard, sliding windows, n-gram cache, score-first TTT",
        description="Evaluate a run directory (its model.pt, or artifact.pgz with --artifact) or a .pgz artifact "
        "on the validation split: standard windows, sliding windows, then an n-gram cache blended with the "
        "model, then (--ttt) score-first test-time training inside the causal harness, with the n-gram on "
        "top. eval.json's 'score' names the headline (the most complete legal method). Writes eval.json (default: in the run directory / beside the artifact) and prints a table. "
        "Works under torchrun (windows shared across ranks; rank 0 writes). Settings default to the run's "
        "eval config.",
        )
    p.add_argument("source", metavar="RUN_DIR_OR_ARTIFACT", help="run directory or .pgz artifact file")
    p.add_argument("--stride", type=flag_number(int, 0, 1 << 17), default=None, help="sliding-window stride (0 = no sliding evaluation; "
                   "default: the run's eval.stride, 64 in the presets)")
    p.add_argument("--ngram", choices=NGRAM_MODES, default=None,
                   help="n-gram mode: causal (valid), two-pass / loo (leaky, for reproduction) or none "
                   "(default: the run's eval.ngram)")
    p.add_argument("--ttt", choices=TTT_MODES, default=None,
                   help="score-first test-time training in the causal harness: lora (per-document adapters), "
                   "global (SGD on the base weights), phased (the record's mix) or none (default: the run's ttt.mode)")
    p.add_argument("--per-token", default=None, metavar="FILE.npy",
                   help="save the NLL (nats, float64) of every target of the headline score, in stream order")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override an eval.* or ttt.* setting, e.g. ttt.chunk_tokens=64 (repeatable)")
    p.add_argument("--orders", default=None, metavar="MIN-MAX", help="n-gram orders, e.g. 2-12 (default: the run's)")
    p.add_argument("--data", default=None, metavar="DIR", help="data directory whose fineweb_val_*.bin to use "
                   "(default: the run's data_dir)")
    p.add_argument("--tokenizer", default=None, metavar="FILE", help="SentencePiece model for byte counts "
                   "(default: the run's tokenizer, else DIR/tokenizer.model)")
    p.add_argument("--out", default=None, metavar="FILE", help="where to write eval.json (with --verify: a folder, "
                   "default runs/verify-<sha256[:12]>)")
    p.add_argument("--verify", action="store_true",
                   help="RUN_DIR_OR_ARTIFACT is someone else's artifact: evaluate it on your --data with pgolf's "
                   "eval/ttt defaults and your flags, ignoring the settings embedded in it (pgolf.eval.verify)")
    p.add_argument("--force", action="store_true", help="with --verify: write into a non-empty --out folder")
    p.add_argument("--max-tokens", type=flag_number(), default=0, metavar="N", help="evaluate only the first N validation "
                   "tokens (0 = all)")
    p.add_argument("--seq-len", type=flag_number(int, 0, 1 << 17), default=None, help="window length (default: eval.seq_len or the "
                   "training seq_len)")
    p.add_argument("--batch-seqs", type=flag_number(int, 1, 4096), default=None, help="windows per forward pass (default: eval.batch_seqs)")
    p.add_argument("--artifact", action="store_true", help="for a run directory, evaluate RUN_DIR/artifact.pgz "
                   "instead of model.pt")
    p.add_argument("--allow-tokenizer-mismatch", action="store_true",
                   help="evaluate even when the tokenizer is not the data's / the run's (pgolf.data.fingerprint)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where to run the model")
    p.add_argument("--ttt-in-process", action="store_true",
                   help="debugging: run the TTT method in this process instead of a process of its own "
                   "(pgolf.eval.isolate); the method could then reach unrevealed tokens, and eval.json says "
                   "\"isolated\": false")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_cmd)
