"""The seq_len sweeps the scaling analysis reads: per configuration and implementation, each
seq_len's value with its interval, on the log scale where the fits and comparisons live.

Only records with status "ok" and a positive, finite value count: a failed or unmeasured case
says nothing about cost. A configuration is everything held fixed along a sequence-length sweep
(harness.case: one definition for every table, plot and fit); a series runs along `sweep_len`,
the key length (seq_len itself for a square problem). Several records for one impl,
configuration and length (seeds, repeated runs) are reduced to their median value and the union
of their intervals. An unstable time
(`stable: false`) is left out.

A time's interval is the 95% CI of its median; a memory figure has none. Neither is taken as
tighter than ±MIN_REL_UNCERTAINTY: one process's samples understate how much the next process
would differ (docs/method.md, "Repeats"), and a memory figure is one reading of an allocator.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from harness.case import config_key, sweep_len

METRICS = {"time": "median_s", "memory": "peak_mem_bytes"}
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


def _point(value: float, lows: list[float], highs: list[float]) -> Point:
    down = math.log(value / min(lows)) if lows and min(lows) < value else 0.0
    up = math.log(max(highs) / value) if highs and max(highs) > value else 0.0
    return Point(value, max(down, LOG_FLOOR), max(up, LOG_FLOOR))


def points(records: list[dict], metric: str) -> dict[tuple, dict[str, dict[int, Point]]]:
    """{config: {impl: {sweep_len: Point}}} from the usable records of one metric."""
    field = METRICS[metric]
    raw: dict[tuple, dict[str, dict[int, list[dict]]]] = {}
    for r in records:
        if metric == "time" and r.get("stable") is False:
            continue
        if r.get("status") == "ok" and usable(r.get(field)):
            by_n = raw.setdefault(config_key(r), {}).setdefault(r["impl"], {})
            by_n.setdefault(sweep_len(r), []).append(r)
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
    """{(config, impl): sweep lengths whose time was left out as unstable}."""
    out: dict[tuple, list[int]] = {}
    for r in records:
        if r.get("status") == "ok" and r.get("stable") is False:
            out.setdefault((config_key(r), r["impl"]), []).append(sweep_len(r))
    return {k: sorted(v) for k, v in out.items()}
