"""Turning command-line text into validated values: one line and exit code 2 for a mistake."""
from __future__ import annotations

import argparse
import fnmatch
from pathlib import Path

from harness import values
from harness.constants import DTYPES, MODES
from harness.spec import TIMING_KEYS

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
RESULTS_DIR = Path("results")
FILTER_OPTIONS = (("--impl", "implementations to keep (comma list, globs)"),
                  ("--seq-len", "seq_len values to keep (comma list)"),
                  ("--dtype", "dtypes to keep (comma list)"),
                  ("--device", "devices to keep (comma list)"),
                  ("--causal", "keep causal (true) or full (false) cases"))


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + error
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def split_values(values: list[str] | None) -> list[str]:
    """Repeated options and comma lists alike: ["a,b", "c"] -> ["a", "b", "c"]."""
    return [v.strip() for group in values or [] for v in group.split(",") if v.strip()]


def arg(kind: values.Kind):
    """An argparse `type` checking text by the same rule as the suite key of that kind."""
    def parse(text: str):
        try:
            return kind.from_text(text)
        except values.BadValue as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    parse.__name__ = kind.expected  # argparse names the type in some messages
    return parse


def checked_list(option: str, kind: values.Kind, given: list[str] | None) -> list:
    """A repeated or comma-list option, each value checked: --seq-len 128,256."""
    try:
        return [kind.from_text(v, option) for v in split_values(given)]
    except values.BadValue as exc:
        raise UsageError(str(exc)) from None


def add_filter_options(parser, with_mode: bool = False) -> None:
    for option, text in FILTER_OPTIONS:
        parser.add_argument(option, action="append", help=text)
    if with_mode:
        parser.add_argument("--mode", action="append", help="modes to keep (fwd, fwd_bwd)")


def filters_of(args, known_impls) -> dict[str, list]:
    """The filter options as validated data (the plan records them); empty lists are absent."""
    impls = split_values(args.impl)
    for pattern in impls:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in known_impls):
            raise UsageError(f"--impl: no implementation matches {pattern!r}: expected one of "
                             f"{', '.join(sorted(known_impls))}")
    dtypes = split_values(args.dtype)
    for d in dtypes:
        if d not in DTYPES:
            raise UsageError(f"--dtype: unknown dtype {d!r}: expected one of {', '.join(DTYPES)}")
    modes = split_values(getattr(args, "mode", None))
    for m in modes:
        if m not in MODES:
            raise UsageError(f"--mode: unknown mode {m!r}: expected one of {', '.join(MODES)}")
    found = {"impl": impls, "seq_len": checked_list("--seq-len", values.DIMENSION, args.seq_len),
             "dtype": dtypes, "device": checked_list("--device", values.DEVICE, args.device),
             "causal": checked_list("--causal", values.BOOL, args.causal), "mode": modes}
    return {k: v for k, v in found.items() if v}


def filter_cases(cases, filters: dict[str, list]):
    """The cases the filters keep; UsageError when they keep none."""
    def keep(c) -> bool:
        return all(any(fnmatch.fnmatchcase(c.impl, p) for p in values) if key == "impl"
                   else getattr(c, key) in values for key, values in filters.items())

    kept = [c for c in cases if keep(c)]
    if not kept:
        raise UsageError("the filters leave no case of the suite to run (suite has seq_len "
                         f"{sorted({c.seq_len for c in cases})}, dtype {sorted({c.dtype for c in cases})}, "
                         f"device {sorted({c.device for c in cases})})")
    return kept


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
    return _output(values.output_dir, text, option)


def output_file(text: str | None, option: str) -> Path | None:
    """--md FILE, --json FILE: a file attnbench can write (None when not given)."""
    return _output(values.output_file, text, option)


def _output(check, text: str | None, option: str) -> Path | None:
    if text is None:
        return None
    try:
        return check(text, option)
    except values.BadValue as exc:
        raise UsageError(str(exc)) from None


def make_dir(path: Path, option: str = "--out") -> Path:
    """Create an output directory; a place the system refuses is the user's to change."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{option}: cannot create {path} ({exc.strerror})") from None
    return path
