"""How implementations compare with one another, shape by shape: the speedup over a baseline
(the matrix and its heatmap), its average, best and worst per implementation with the
configuration of each extreme (as attention-gym's benchmarks summarise a sweep), and what
padding costs (a padded ragged batch against the same batch packed)."""
from __future__ import annotations

import math

from harness.case import CONSTANT, PACKED, PADDED, named_config, shape_key, shape_order, sweep_len
from harness.report.format import finite, fmt_ratio
from harness.report.shapes import impls_of, shape_columns, shape_labels
from harness.units import duration


def speedup(records: list[dict], baseline: str) -> dict:
    """baseline median / impl median per shape the baseline ran: above 1 is faster."""
    ok = [r for r in records if r["status"] == "ok" and (finite(r["median_s"]) or 0) > 0]
    base = {shape_key(r): finite(r["median_s"]) for r in ok if r["impl"] == baseline}
    present = any(r["impl"] == baseline for r in records)
    others = [i for i in impls_of(ok) if i != baseline]
    result = {"baseline": baseline, "present": present, "ran": bool(base), "impls": others,
              "columns": [], "rows": [], "available": impls_of(ok)}
    if not base or not others:
        return result
    by_shape: dict[tuple, dict[str, float]] = {}
    for r in ok:
        if shape_key(r) in base and r["impl"] != baseline:
            by_shape.setdefault(shape_key(r), {})[r["impl"]] = finite(r["median_s"])
    columns = shape_columns([r for r in ok if shape_key(r) in base])
    rows = []
    for key in sorted(base, key=shape_order):
        ratios = [base[key] / by_shape[key][i] if i in by_shape.get(key, {}) else None
                  for i in others]
        rows.append({"labels": shape_labels(key, columns), "ratios": ratios,
                     "texts": [fmt_ratio(x) for x in ratios]})
    result.update(columns=columns, rows=rows)
    return result


def _timed(records: list[dict]) -> list[dict]:
    return [r for r in records if r["status"] == "ok" and (finite(r["median_s"]) or 0) > 0
            and r.get("stable") is not False]


def _where(r: dict) -> str:
    return f"{named_config(r)}, N={sweep_len(r)}"


def speedup_summary(records: list[dict], baseline: str) -> list[dict]:
    """Per implementation: the geometric-mean speedup over `baseline` across the shapes both ran
    (stable figures only), and its best and worst shape, each named."""
    timed = _timed(records)
    base = {shape_key(r): r for r in timed if r["impl"] == baseline}
    out = []
    for impl in impls_of(timed):
        if impl == baseline:
            continue
        pairs = [(base[shape_key(r)]["median_s"] / r["median_s"], r) for r in timed
                 if r["impl"] == impl and shape_key(r) in base]
        if not pairs:
            continue
        mean = math.exp(sum(math.log(x) for x, _ in pairs) / len(pairs))
        (best, at_best), (worst, at_worst) = max(pairs, key=lambda p: p[0]), \
            min(pairs, key=lambda p: p[0])
        out.append({"impl": impl, "shapes": len(pairs), "average": mean,
                    "average_text": fmt_ratio(mean), "best": best, "best_text": fmt_ratio(best),
                    "best_where": _where(at_best), "worst": worst,
                    "worst_text": fmt_ratio(worst), "worst_where": _where(at_worst)})
    return out


def padding_overhead(records: list[dict]) -> list[dict]:
    """Per padded ragged case: its median against the same batch packed, by the same
    implementation where it ran packed, else by the fastest that did (named: that comparison
    also holds the two implementations' own difference). Above 1x, padding costs that much."""
    timed = _timed(records)

    def packed_key(r):
        return shape_key({**r, "layout": PACKED})

    packed: dict[tuple, list[dict]] = {}
    for r in timed:
        if r.get("layout") == PACKED:
            packed.setdefault(shape_key(r), []).append(r)
    rows = []
    ragged = [r for r in timed if (r.get("layout") or PADDED) == PADDED
              and (r.get("lengths") or CONSTANT) != CONSTANT]  # a full batch pads nothing
    for r in sorted(ragged,
                    key=lambda r: (r["impl"], shape_order(shape_key(r)))):
        others = packed.get(packed_key(r))
        if not others:
            continue
        same = next((o for o in others if o["impl"] == r["impl"]), None)
        against = same or min(others, key=lambda o: o["median_s"])
        ratio = r["median_s"] / against["median_s"]
        rows.append({"impl": r["impl"], "config": named_config({**r, "layout": PADDED}),
                     "seq_len": sweep_len(r), "padded_ms": duration(r["median_s"], unit="ms"),
                     "packed_impl": against["impl"], "same_impl": same is not None,
                     "packed_ms": duration(against["median_s"], unit="ms"),
                     "overhead": ratio, "overhead_text": fmt_ratio(ratio)})
    return rows
