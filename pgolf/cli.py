"""The ``pgolf`` command line: a thin dispatcher over the stage subcommands.

Each stage owns a ``commands`` module exposing ``register(subparsers)``, which adds its
subcommand(s) and sets ``func`` (a function taking the parsed ``argparse.Namespace`` and
returning an exit code). Heavy imports (torch, numba) happen inside those functions, so
``pgolf --help`` is quick. Expected failures raise :class:`pgolf.errors.PgolfError`;
they are printed as one line ``pgolf: error: ...`` on stderr with exit code 1 (2 for a
setting out of range, :class:`pgolf.errors.RangeError`).

Run ``pgolf --help`` or ``python -m pgolf --help``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from pgolf import __version__
from pgolf.errors import PgolfError

#: Modules that register subcommands, in the order they appear in ``--help``.
COMMAND_MODULES = (
    "pgolf.data.commands",
    "pgolf.train.commands",
    "pgolf.quant.commands",
    "pgolf.eval.commands",
    "pgolf.pipeline.commands",
    "pgolf.pipeline.frontier_commands",
    "pgolf.submit.commands",
    "pgolf.audit.commands",
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available stage's subcommands."""
    parser = argparse.ArgumentParser(
        prog="pgolf",
        description="Train, compress and honestly measure byte-budgeted language models.",
    )
    parser.add_argument("--version", action="version", version=f"pgolf {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        module.register(sub)
    return parser


def os_error_line(e: OSError) -> str:
    """One line for an OSError: the path and what is wrong with it."""
    what = (e.strerror or type(e).__name__).lower()
    if isinstance(e, FileExistsError):
        what = "exists and is not a directory"
    return f"{e.filename}: {what}" if e.filename else what


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except PgolfError as e:
        label = getattr(e, "label", "")  # e.g. "LegalityError: ..." for a method the evaluator rejected
        print(f"pgolf: error: {label + ': ' if label else ''}{e}", file=sys.stderr)
        return getattr(e, "exit_code", 1)
    except OSError as e:  # a wrong path given by the user: a file where a folder goes, no permission, ...
        print(f"pgolf: error: {os_error_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pgolf: interrupted", file=sys.stderr)
        return 130
