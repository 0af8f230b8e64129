"""`attnbench list | run | report | export | compare | ab | baseline | profile | recommend`: the
command line.

Thin: each command parses and validates its input, then calls the layers below. User mistakes
get one line and exit code 2.
"""
from __future__ import annotations

import sys
import warnings

from harness.cli import export, gate, listing, profile, recommend, run
from harness.cli.args import EXIT_BAD_INPUT, EXIT_INTERRUPTED, Parser, UsageError, version
from harness.store import DamagedFile
from harness.values import BadValue


def build_parser() -> Parser:
    parser = Parser(prog="attnbench", description="Benchmark attention implementations: latency, "
                    "accuracy against float64, across shapes, dtypes, masks and devices.")
    parser.add_argument("--version", action="version", version=f"attnbench {version()}")
    sub = parser.add_subparsers(dest="command", parser_class=Parser, required=True)
    listing.add_parser(sub)
    run.add_parsers(sub)
    gate.add_parsers(sub)
    profile.add_parser(sub)
    recommend.add_parser(sub)
    export.add_parser(sub)
    return parser


def one_line_warnings():
    """A `warnings.showwarning` that prints each warning (a skipped damaged record, a library's
    notice) as one line on stderr, once per command however often the file is read."""
    shown: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = f"warning: {message}"
        if text not in shown:
            shown.add(text)
            print(text, file=sys.stderr)
    return show


def main(argv: list[str] | None = None) -> int:
    with warnings.catch_warnings():
        warnings.showwarning = one_line_warnings()
        try:
            args = build_parser().parse_args(argv)
            return args.func(args)
        except (UsageError, BadValue, DamagedFile) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except KeyboardInterrupt:  # `run` and `ab` say what they kept; anything else stops here
            print("interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
