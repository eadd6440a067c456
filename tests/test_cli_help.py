"""Every subcommand's --help states each default once (issue #22 item 8: eval --help printed
"(default: ...) (default: None)"). Run: ``pytest -q tests/test_cli_help.py``."""
import argparse

from pgolf.cli import build_parser


def _subparsers(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                for inner, subsub in _subparsers(sub):
                    yield f"{name} {inner}", subsub


def test_no_help_text_doubles_its_default():
    subs = list(_subparsers(build_parser()))
    assert len(subs) >= 8
    for name, sub in subs:
        text = " ".join(sub.format_help().split())
        for action in sub._actions:
            h = action.help or ""
            assert h.count("(default:") <= 1, (name, action.dest, h)
        assert ") (default:" not in text, name
