"""Turning command-line text into validated values: one line and exit code 2 for a mistake."""
from __future__ import annotations

import argparse
from pathlib import Path

from harness import values
from harness.spec import FUNCTION_PATH, TIMING_KEYS
from harness.store.plan import FILTER_KEYS, Request

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
FILTER_OPTIONS = (("--impl", "implementations to keep (comma list, globs)"),
                  ("--seq-len", "seq_len values to keep (comma list)"),
                  ("--dtype", "dtypes to keep (comma list)"),
                  ("--device", "devices to keep (comma list)"),
                  ("--causal", "keep causal (true) or full (false) cases"))


def version() -> str:
    """The installed distribution's version (what pip and bug reports see), else the source's."""
    from importlib import metadata

    try:
        return metadata.version("attnbench")
    except metadata.PackageNotFoundError:  # a checkout run without installing it
        import sys

        return sys.modules["harness"].__version__  # loaded before any of its modules


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + error
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def arg(kind: values.Kind):
    """An argparse `type` checking text by the same rule as the suite key of that kind."""
    def parse(text: str):
        try:
            return kind.from_text(text)
        except values.BadValue as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    parse.__name__ = kind.expected  # argparse names the type in some messages
    return parse


def add_filter_options(parser, with_mode: bool = False) -> None:
    for option, text in FILTER_OPTIONS:
        parser.add_argument(option, action="append", help=text)
    if with_mode:
        parser.add_argument("--mode", action="append", help="modes to keep (fwd, fwd_bwd)")


def add_function_option(parser) -> None:
    parser.add_argument("--fn", action="append", type=arg(FUNCTION_PATH), metavar="MODULE:FUNCTION",
                        help="also run this torch function f(q, k, v, *, causal, scale) on the "
                             "suite's cases, as implementation fn:MODULE:FUNCTION (repeatable)")


def use_functions(args) -> None:
    """Load the torch functions --fn and the suite's `sweep.fn` name as implementations: before
    the suite is read, whose implementations they join."""
    from harness import registry
    from harness.spec import resolve_suite_path, suite_functions

    registry.use_functions(getattr(args, "fn", None) or [], "--fn")
    listed = suite_functions(args.suite)
    if listed:
        registry.use_functions(listed, f"{resolve_suite_path(args.suite)}: key 'sweep.fn'")


def filter_text(args) -> dict[str, list[str] | None]:
    """The filter options as given (harness.store.plan checks and applies them)."""
    return {key: getattr(args, key, None) for key in FILTER_KEYS}


def size(text: str | None, option: str) -> int | None:
    """A size option (--mem-limit 2GiB) in bytes; None when not given."""
    return None if text is None else values.SIZE.from_text(text, option)


def request_of(args) -> Request:
    """What `run` and `ab` ask for, as data: the plan is built from it below the CLI."""
    return Request(suite=args.suite, filters=filter_text(args), timing=timing_overrides(args),
                   threads=args.threads, mem_limit=size(args.mem_limit, "--mem-limit"))


def timing_overrides(args) -> dict:
    """The timing settings the command line changes (the plan records them)."""
    return {k: v for k, v in (("budget_s", args.budget), ("timeout_s", args.timeout),
                              ("target_ci", args.target_ci),
                              ("repeats", getattr(args, "repeats", None)),
                              ("cuda_graphs", getattr(args, "cuda_graphs", None) or None))
            if v is not None}


def add_timing_options(parser, per: str = "case") -> None:
    parser.add_argument("--threads", type=arg(values.THREADS),
                        help="intra-op threads for every framework (default: physical cores)")
    parser.add_argument("--budget", type=arg(TIMING_KEYS["budget_s"]),
                        help=f"sampling seconds per {per}")
    parser.add_argument("--timeout", type=arg(TIMING_KEYS["timeout_s"]),
                        help=f"seconds before a {per} is killed")
    parser.add_argument("--target-ci", type=arg(TIMING_KEYS["target_ci"]),
                        help="stop sampling when the median's 95%% CI is within ± this fraction")


def output_dir(text: str | None, option: str = "--out") -> Path | None:
    """--out as a directory attnbench can create or add to (None when not given)."""
    return None if text is None else values.output_dir(text, option)


def output_file(text: str | None, option: str) -> Path | None:
    """--md FILE, --json FILE: a file attnbench can write (None when not given)."""
    return None if text is None else values.output_file(text, option)
