"""Every value a user gives attnbench, checked by one rule per kind, whether it comes from the
command line (`from_text`) or a suite file (`check`): `--budget` and `timing.budget_s` cannot
disagree about what a budget is. A bad value raises BadValue, whose text is one line: where,
what was expected, what was given.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from harness.units import parse_size

MAX_DIM = 2**31 - 1  # no framework indexes a tensor dimension past int32 for attention
MAX_ELEMENTS = 2**63 - 1  # what a 64-bit index addresses: a tensor beyond it cannot exist
MAX_SECONDS = 1e6  # about 11 days: beyond it a timeout or budget is a typo, and overflows timers
MAX_COUNT = 10**9
MAX_THREADS = 4096
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")


class BadValue(ValueError):
    """A value the user got wrong; str() is the one line to show them."""


def _integer(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int_text(text: str) -> int:
    if not re.fullmatch(r"\s*[+-]?\d+\s*", text):
        raise ValueError(text)
    return int(text)


_real_text = float  # accepts "nan" and "inf": the kinds' checks refuse them


def _fraction_text(text: str) -> float:
    text = text.strip()
    return float(text[:-1]) / 100 if text.endswith("%") else float(text)


def _bool_text(text: str) -> bool:
    words = {"true": True, "on": True, "yes": True, "1": True, "causal": True,
             "false": False, "off": False, "no": False, "0": False, "full": False}
    return words[text.strip().lower()]


@dataclass(frozen=True)
class Kind:
    """A kind of value: what a valid one is, in words and as a test, and how text becomes one."""

    expected: str
    valid: Callable[[object], bool]
    parse: Callable[[str], object] | None = None

    def check(self, value, where: str = ""):
        """`value` (already typed, e.g. from TOML) if valid, else BadValue naming `where`."""
        if not self.valid(value):
            raise BadValue(f"{where}: " * bool(where) + f"expected {self.expected}, got {value!r}")
        return value

    def from_text(self, text: str, where: str = ""):
        """`text` (from the command line) as a valid value, else BadValue naming `where`."""
        try:
            value = self.parse(text) if self.parse else text
        except (ValueError, KeyError, OverflowError):
            value = None
        if value is None or not self.valid(value):
            raise BadValue(f"{where}: " * bool(where) + f"expected {self.expected}, got {text!r}")
        return value


def one_of(values, expected: str | None = None) -> Kind:
    return Kind(expected or f"one of {', '.join(map(str, values))}", lambda v: v in values)


DIMENSION = Kind(f"a positive integer of at most {MAX_DIM}",
                 lambda v: _integer(v) and 0 < v <= MAX_DIM, _int_text)
SEED = Kind(f"a non-negative integer of at most {MAX_DIM}",
            lambda v: _integer(v) and 0 <= v <= MAX_DIM, _int_text)
COUNT = Kind(f"a positive integer of at most {MAX_COUNT}",
             lambda v: _integer(v) and 0 < v <= MAX_COUNT, _int_text)
NON_NEGATIVE_COUNT = Kind(f"a non-negative integer of at most {MAX_COUNT}",
                          lambda v: _integer(v) and 0 <= v <= MAX_COUNT, _int_text)
THREADS = Kind(f"a positive integer of at most {MAX_THREADS}",
               lambda v: _integer(v) and 0 < v <= MAX_THREADS, _int_text)
SECONDS = Kind(f"a positive number of seconds of at most {MAX_SECONDS:g}",
               lambda v: _real(v) and 0 < v <= MAX_SECONDS, _real_text)
NON_NEGATIVE_SECONDS = Kind(f"a number of seconds, at least 0 and at most {MAX_SECONDS:g}",
                            lambda v: _real(v) and 0 <= v <= MAX_SECONDS, _real_text)
FRACTION = Kind("a fraction above 0 and below 1, like 0.05 (or 5%)",
                lambda v: _real(v) and 0 < v < 1, _fraction_text)
PADDING = Kind("a fraction of padded keys, at least 0 and below 1",
               lambda v: _real(v) and 0 <= v < 1, _fraction_text)
BOOL = Kind("true or false", lambda v: isinstance(v, bool), _bool_text)
WINDOW = Kind(f"a number of most recent keys each query sees, 1 to {MAX_DIM} (0: no window)",
              lambda v: _integer(v) and 0 <= v <= MAX_DIM, _int_text)
SOFTCAP = Kind("a positive logit cap like 50.0 (0: no soft-capping)",
               lambda v: _real(v) and 0 <= v <= 1e6, _real_text)
DEVICE = Kind("'cpu', 'cuda' or 'cuda:N'",
              lambda v: isinstance(v, str) and (v in ("cpu", "cuda") or
                                               re.fullmatch(r"cuda:\d{1,3}", v) is not None))
NAME_KIND = Kind("a name of letters, digits, '.', '_', '+' or '-' (at most 100, no path)",
                 lambda v: isinstance(v, str) and NAME.fullmatch(v) is not None)
TEXT = Kind("a string", lambda v: isinstance(v, str))
SIZE = Kind("a positive size such as 512MiB, 2GiB or 1.5G, below 8 EiB",
            lambda v: _integer(v) and 0 < v <= MAX_ELEMENTS, parse_size)


def shape_problem(batch: int, heads: int, seq_len: int, seq_len_kv: int, head_dim: int) -> str | None:
    """Why no tensor of this attention problem can exist (too many elements), or None."""
    scores = batch * heads * seq_len * seq_len_kv
    inputs = batch * heads * max(seq_len, seq_len_kv) * head_dim
    if max(scores, inputs) > MAX_ELEMENTS:
        return (f"batch {batch} x heads {heads} x seq_len {seq_len} x "
                f"{'seq_len_kv ' + str(seq_len_kv) if scores >= inputs else 'head_dim ' + str(head_dim)}"
                f" is {max(scores, inputs):.3g} elements, beyond the {MAX_ELEMENTS + 1:.3g} a "
                "64-bit index addresses")
    return None


def output_dir(text: str, where: str) -> Path:
    """A directory attnbench may create or add to: not empty text, not an existing file, and
    under a directory this user can write."""
    path = _path(text, where, "a directory path")
    try:
        if path.exists() and not path.is_dir():
            raise BadValue(f"{where}: {text} is an existing file, expected a directory")
        _writable_ancestor(path, where)
    except OSError as exc:  # a name too long, a loop of links
        raise BadValue(f"{where}: {text!r} cannot be used ({exc.strerror})") from None
    return path


def output_file(text: str, where: str) -> Path:
    """A file attnbench may write: not empty text, not a directory, in a writable place."""
    path = _path(text, where, "a file path")
    try:
        if path.is_dir():
            raise BadValue(f"{where}: {text} is a directory, expected a file")
        if path.exists() and not os.access(path, os.W_OK):
            raise BadValue(f"{where}: {text} cannot be written (permission denied)")
        _writable_ancestor(path.parent, where)
    except OSError as exc:
        raise BadValue(f"{where}: {text!r} cannot be used ({exc.strerror})") from None
    return path


def _path(text: str, where: str, expected: str) -> Path:
    if not text.strip():
        raise BadValue(f"{where}: expected {expected}, got an empty string")
    if "\0" in text:
        raise BadValue(f"{where}: expected {expected}, got {text!r} (a NUL character)")
    return Path(text)


def _writable_ancestor(path: Path, where: str) -> None:
    """The nearest existing directory at or above `path` must be one this user can write."""
    probe = path.absolute()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise BadValue(f"{where}: {probe} is a file, so {path} cannot be created under it")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise BadValue(f"{where}: {path} cannot be created: {probe} is not writable")
