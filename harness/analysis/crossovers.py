"""Where two implementations of one configuration really swap order as N grows.

At a seq_len both measured, one is *ahead* only when the order is significant: their intervals
(`series.Point`, at least ±2% each) do not overlap, and the slower takes more than `min_ratio`
times as long. Anything else is a tie. A crossover is reported only between a seq_len where one
is ahead and the next seq_len where the other is ahead, with nothing but ties between them: a
pair that trades places within its noise has no crossover. Its seq_len is placed where the log
ratio of the medians, linear in log N between the two neighbouring seq_lens whose medians change
order, reaches zero (exact for two power laws), so a crossing between grid points is found
within one grid step.
"""
from __future__ import annotations

import math
from itertools import combinations

from harness.analysis.series import Point, points
from harness.case import CONFIG_FIELDS, config_key, config_order, named_config


def _ahead(a: Point, b: Point, tie: float) -> int:
    """-1 when a is significantly faster, 1 when b is, 0 for a tie."""
    gap = a.log - b.log
    if a.high < b.low and -gap > tie:
        return -1
    if b.high < a.low and gap > tie:
        return 1
    return 0


def _crossing(n1: int, d1: float, n2: int, d2: float) -> float:
    """Where the log ratio, linear in log N between two points, reaches zero."""
    x1, x2 = math.log(n1), math.log(n2)
    if d1 == d2:
        return math.sqrt(n1 * n2)
    return math.exp(x1 + d1 / (d1 - d2) * (x2 - x1))


def _place(a: dict[int, Point], b: dict[int, Point], ns: list[int]) -> float:
    """The crossing between the first two neighbouring seq_lens of `ns` whose medians change
    order (ns runs from one significant order to the opposite one, so there is such a pair)."""
    diffs = [(n, a[n].log - b[n].log) for n in ns]
    for (n1, d1), (n2, d2) in zip(diffs, diffs[1:]):
        if d1 == 0:
            return float(n1)
        if (d1 < 0) != (d2 < 0):
            return _crossing(n1, d1, n2, d2)
    return math.sqrt(ns[0] * ns[-1])


def crossovers(records: list[dict], metric: str = "time", min_ratio: float = 1.0) -> list[dict]:
    """Every significant swap of order, per configuration and pair of implementations."""
    tie = math.log(min_ratio)
    out = []
    for config, impls in points(records, metric).items():
        for a, b in combinations(sorted(impls), 2):
            shared = sorted(set(impls[a]) & set(impls[b]))
            last = None  # (index in shared, side ahead) of the last significant order
            for i, n in enumerate(shared):
                side = _ahead(impls[a][n], impls[b][n], tie)
                if side == 0:
                    continue
                if last is not None and side != last[1]:
                    n1 = shared[last[0]]
                    span = shared[last[0]:i + 1]
                    below, above = (a, b) if last[1] < 0 else (b, a)
                    out.append({**dict(zip(CONFIG_FIELDS, config)), "metric": metric,
                                "faster_below": below, "faster_above": above,
                                "seq_len": int(round(_place(impls[a], impls[b], span))),
                                "between": (n1, n),
                                "ratio_below": math.exp(abs(impls[a][n1].log - impls[b][n1].log)),
                                "ratio_above": math.exp(abs(impls[a][n].log - impls[b][n].log))})
                last = (i, side)
    out.sort(key=lambda r: (config_order(tuple(r[k] for k in CONFIG_FIELDS)), r["seq_len"],
                            r["faster_below"], r["faster_above"]))
    return out


def crossover_text(c: dict) -> str:
    """One crossover in words: who overtakes whom, near which N, and how clearly either side."""
    text = (f"{c['faster_above']} overtakes {c['faster_below']} near seq_len {c['seq_len']} "
            f"({c['metric']}, {named_config(c)}")
    if c.get("ratio_below") and c.get("ratio_above"):
        low, high = c["between"]
        text += (f"; {c['ratio_below']:.2f}x behind at N={low}, {c['ratio_above']:.2f}x ahead "
                 f"at N={high}")
    return text + ")"


PER_CONFIG_SHOWN = 3  # crossovers a console shows per configuration; scaling.json has them all


def group(found: list[dict]) -> list[tuple[tuple, list[dict]]]:
    """Crossovers grouped by configuration (and metric), in order."""
    out: dict[tuple, list[dict]] = {}
    for c in found:
        out.setdefault((*config_key(c), c.get("metric")), []).append(c)
    return list(out.items())
