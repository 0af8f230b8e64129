"""The seq_len sweeps the scaling analysis reads: per configuration and implementation, each
seq_len's value with its interval, on the log scale where the fits and comparisons live.

Only records with status "ok" and a positive, finite value count: a failed or unmeasured case
says nothing about cost. A configuration is everything held fixed along a seq_len sweep;
records whose seq_len_kv differs from seq_len are a separate configuration
(`kv_equals_seq_len`). Several records for one impl, configuration and seq_len (seeds, repeated
runs) are reduced to their median value and the union of their intervals. An unstable time
(`stable: false`) is left out.

A time's interval is the 95% CI of its median; a memory figure has none. Neither is taken as
tighter than ±MIN_REL_UNCERTAINTY: one process's samples understate how much the next process
would differ (README, "Repeats"), and a memory figure is one reading of an allocator.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from harness.constants import CONFIG_FIELDS as CASE_CONFIG_FIELDS

METRICS = {"time": "median_s", "memory": "peak_mem_bytes"}
CONFIG_FIELDS = CASE_CONFIG_FIELDS + ("kv_equals_seq_len",)
MIN_REL_UNCERTAINTY = 0.02  # the default target CI: no point is known better than ±2%
LOG_FLOOR = math.log1p(MIN_REL_UNCERTAINTY)


@dataclass(frozen=True)
class Point:
    """One seq_len of a sweep: value, and the log distances down and up to its interval's ends
    (each at least LOG_FLOOR)."""
    value: float
    down: float
    up: float

    @property
    def log(self) -> float:
        return math.log(self.value)

    @property
    def low(self) -> float:
        return self.value * math.exp(-self.down)

    @property
    def high(self) -> float:
        return self.value * math.exp(self.up)


def usable(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value) and value > 0


def config_of(record: dict) -> tuple:
    kv = record.get("seq_len_kv")
    square = kv is None or kv == record["seq_len"]
    return tuple(record.get(k) for k in CONFIG_FIELDS[:-1]) + (square,)


def sort_key(value) -> tuple:
    """Sort key that keeps numbers numeric (batch 2 before 16) and tolerates None."""
    if value is None:
        return (2, 0, "")
    if isinstance(value, (int, float)):
        return (0, value, "")
    return (1, 0, str(value))


def config_order(config: tuple) -> tuple:
    return tuple(sort_key(v) for v in config)


def _point(value: float, lows: list[float], highs: list[float]) -> Point:
    down = math.log(value / min(lows)) if lows and min(lows) < value else 0.0
    up = math.log(max(highs) / value) if highs and max(highs) > value else 0.0
    return Point(value, max(down, LOG_FLOOR), max(up, LOG_FLOOR))


def points(records: list[dict], metric: str) -> dict[tuple, dict[str, dict[int, Point]]]:
    """{config: {impl: {seq_len: Point}}} from the usable records of one metric."""
    field = METRICS[metric]
    raw: dict[tuple, dict[str, dict[int, list[dict]]]] = {}
    for r in records:
        if metric == "time" and r.get("stable") is False:
            continue
        if r.get("status") == "ok" and usable(r.get(field)):
            by_n = raw.setdefault(config_of(r), {}).setdefault(r["impl"], {})
            by_n.setdefault(int(r["seq_len"]), []).append(r)
    out: dict[tuple, dict[str, dict[int, Point]]] = {}
    for config, impls in raw.items():
        for impl, by_n in impls.items():
            for n, rs in by_n.items():
                value = float(np.median([float(r[field]) for r in rs]))
                lows = [float(r["ci_low_s"]) for r in rs
                        if metric == "time" and usable(r.get("ci_low_s"))]
                highs = [float(r["ci_high_s"]) for r in rs
                         if metric == "time" and usable(r.get("ci_high_s"))]
                out.setdefault(config, {}).setdefault(impl, {})[n] = _point(value, lows, highs)
    return out


def unstable_seq_lens(records: list[dict]) -> dict[tuple, list[int]]:
    """{(config, impl): seq_lens whose time was left out as unstable}."""
    out: dict[tuple, list[int]] = {}
    for r in records:
        if r.get("status") == "ok" and r.get("stable") is False:
            out.setdefault((config_of(r), r["impl"]), []).append(int(r["seq_len"]))
    return {k: sorted(v) for k, v in out.items()}
