"""One way to write a duration, for the console, Markdown, HTML and the gate alike."""
from __future__ import annotations

import math

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
