"""CLI: ``pgolf audit``: check artifacts as an attacker would, without trusting them.

``pgolf audit FILE...`` decodes each artifact in a separate child process under a 1 GiB
address-space limit and a 5 s alarm (:mod:`pgolf.audit.fuzz`), so a hostile file cannot
take the caller down, and prints one line per file: accepted, rejected with the loader's
one-line reason, or what went wrong (a crash, the memory limit, the alarm) and the child's
peak memory. ``pgolf audit --fuzz`` runs the hostile-artifact fuzzer instead: seeded
mutations of valid artifacts of a tiny model (``--scheme all``: every scheme, then every
systematic class of :mod:`pgolf.audit.fuzz_classes`). Exit 0 when every file is accepted
(or no fuzz case failed), 1 otherwise. Linux/macOS (fork). Run::

    pgolf audit runs/tiny/artifact.pgz someone_elses.pgz
    pgolf audit --fuzz --scheme all --cases 200
"""

from __future__ import annotations

import argparse
import sys

from pgolf.errors import PgolfError


def _audit_files(paths: list[str]) -> int:
    import os

    from pgolf.audit.fuzz import decode_files_isolated

    for p in paths:
        if not os.path.isfile(p):
            raise PgolfError(f"{p}: no such file")
    bad = 0
    for path, (outcome, rss_kib) in zip(paths, decode_files_isolated(paths, detail=True)):
        ok = outcome == "accepted"
        safe = ok or outcome.startswith("rejected")
        bad += not ok
        verdict = outcome if safe else f"UNSAFE: {outcome}"
        print(f"{path}: {verdict} (child peak RSS {rss_kib / 1024:.0f} MiB)")
    return 1 if bad else 0


def _fuzz(args: argparse.Namespace) -> int:
    from pgolf.audit.fuzz import SCHEMES, print_summary, run_fuzz
    from pgolf.audit.fuzz_classes import CLASSES

    schemes = list(SCHEMES) if args.scheme == "all" else [args.scheme]
    cases = args.cases if args.cases is not None else (None if args.seconds else 500)
    failed = 0
    for scheme in schemes:
        s = run_fuzz(args.seed, cases, args.seconds, log=lambda m: print(m, file=sys.stderr),
                     scheme=scheme, classes=list(CLASSES) if scheme else [])
        print_summary(s)
        failed += len(s["failures"])
    return 1 if failed else 0


def cmd_audit(args: argparse.Namespace) -> int:
    if args.fuzz == bool(args.artifacts):
        raise PgolfError("audit: give artifact files, or --fuzz (not both)")
    if args.cases is not None and args.cases < 0 or args.seconds is not None and args.seconds <= 0:
        raise PgolfError("audit: --cases must be >= 0 and --seconds > 0")
    return _fuzz(args) if args.fuzz else _audit_files(args.artifacts)


def register(sub) -> None:
    from pgolf.audit.fuzz import SCHEMES

    p = sub.add_parser("audit", help="decode untrusted artifacts in isolated children, or fuzz the loader",
                       description=__doc__.split("\n\n")[0] + " Each file is decoded in a child process under a "
                       "1 GiB address-space limit and a 5 s alarm.")
    p.add_argument("artifacts", nargs="*", metavar="FILE", help="artifact files to check")
    p.add_argument("--fuzz", action="store_true", help="run the hostile-artifact fuzzer instead")
    p.add_argument("--scheme", choices=[*SCHEMES, "all"], default=None,
                   help="with --fuzz: mutate this scheme's artifact, then run every systematic class "
                        "(all: each scheme in turn; default: turbo, turbo-prod, int6, int8, random cases only)")
    p.add_argument("--cases", type=int, default=None, help="with --fuzz: random cases per scheme (default 500)")
    p.add_argument("--seconds", type=float, default=None, help="with --fuzz: stop the random cases after this long")
    p.add_argument("--seed", type=int, default=0, help="with --fuzz: the cases' seed (default 0)")
    p.set_defaults(func=cmd_audit)
