"""Turning command-line text into validated values: one line and exit code 2 for a mistake."""
from __future__ import annotations

import argparse
import fnmatch
from pathlib import Path

from harness.constants import DTYPES, MODES

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


def ints(option: str, values: list[str] | None) -> list[int]:
    out = []
    for v in split_values(values):
        if not v.isdigit() or int(v) <= 0:
            raise UsageError(f"{option}: expected positive integers separated by commas, got {v!r}")
        out.append(int(v))
    return out


def bools(option: str, values: list[str] | None) -> list[bool]:
    words = {"true": True, "on": True, "yes": True, "1": True, "causal": True,
             "false": False, "off": False, "no": False, "0": False, "full": False}
    out = []
    for v in split_values(values):
        if v.lower() not in words:
            raise UsageError(f"{option}: expected true or false, got {v!r}")
        out.append(words[v.lower()])
    return out


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
    found = {"impl": impls, "seq_len": ints("--seq-len", args.seq_len), "dtype": dtypes,
             "device": split_values(args.device), "causal": bools("--causal", args.causal),
             "mode": modes}
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


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def fraction(text: str) -> float:
    """'5%' or '0.05' -> 0.05."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        value = -1.0
    if not (0 < value < 1) or (not text.endswith("%") and float(text) >= 1):
        raise argparse.ArgumentTypeError(f"expected a percentage like 5% or a fraction like 0.05, "
                                         f"got {text!r}")
    return value


def timing_overrides(args) -> dict:
    """The timing settings the command line changes (the plan records them)."""
    return {k: v for k, v in (("budget_s", args.budget), ("timeout_s", args.timeout),
                              ("target_ci", args.target_ci),
                              ("repeats", getattr(args, "repeats", None))) if v is not None}


def add_timing_options(parser, per: str = "case") -> None:
    parser.add_argument("--threads", type=positive_int,
                        help="intra-op threads for every framework (default: physical cores)")
    parser.add_argument("--budget", type=positive_float, help=f"sampling seconds per {per}")
    parser.add_argument("--timeout", type=positive_float,
                        help=f"seconds before a {per} is killed")
    parser.add_argument("--target-ci", type=positive_float,
                        help="stop sampling when the median's 95%% CI is within ± this fraction")
