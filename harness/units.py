"""One way to write a duration, for the console, Markdown, HTML and the gate alike."""
from __future__ import annotations

import math
import re

UNITS = (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9))
SCALES = dict(UNITS)


def significant(value: float) -> str:
    """Three significant digits, never in exponent notation for values of 0.001 and above."""
    size = abs(value)
    if size >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}" if size >= 0.001 or value == 0 else f"{value:.2e}"


def select_unit(seconds: float) -> str:
    """The largest unit in which `seconds` is at least 1 (ns below that)."""
    size = abs(seconds)
    return next((unit for unit, scale in UNITS if size >= scale), "ns")


def duration(seconds, unit: str | None = None, missing: str = "-") -> str:
    """'1.23 ms' (the unit chosen for the value), or with `unit` the bare number in that unit
    ('1.23' for unit='ms'), for a column whose header names the unit. `missing` stands for
    None, NaN and anything that is not a number."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) \
            or not math.isfinite(seconds):
        return missing
    if unit is not None:
        return significant(seconds / SCALES[unit])
    chosen = select_unit(seconds)
    return f"{significant(seconds / SCALES[chosen])} {chosen}"


MIB = 2**20  # bytes in a mebibyte, the unit reports print memory in

SIZE_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6,
              "mib": 2**20, "g": 2**30, "gb": 10**9, "gib": 2**30, "t": 2**40, "tb": 10**12,
              "tib": 2**40, "p": 2**50, "pb": 10**15, "pib": 2**50, "e": 2**60, "eb": 10**18,
              "eib": 2**60, "z": 2**70, "zb": 10**21, "zib": 2**70, "y": 2**80, "yb": 10**24,
              "yib": 2**80}


def size_bytes(number: str, unit: str) -> int:
    """'8.00', 'PiB' -> bytes, exactly for integers (no float rounding of huge sizes)."""
    from decimal import Decimal

    return int(Decimal(number) * SIZE_UNITS[unit.lower()])


def parse_size(text: str) -> int:
    """'512MiB', '2GiB', '1.5G', '8EiB', '1000000' -> bytes. ValueError when it is not a size."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in SIZE_UNITS:
        raise ValueError(f"expected a size such as 512MiB, 2GiB or 1.5G, got {text!r}")
    return size_bytes(match.group(1), match.group(2))
