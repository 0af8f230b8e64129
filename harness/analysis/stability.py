"""Figures that cannot be right within their configuration, and the stability of a whole run.

Within one implementation and configuration, attention's work grows with seq_len, and no faster
than N^4 even across a cache cliff (its work grows as N^2; a score matrix leaving the cache was
measured at about N^3.4 over one doubling). So:
- a median more than IMPLAUSIBLE_RATIO times the median at some larger seq_len, or
- a median more than IMPLAUSIBLE_RATIO · (N / n)^MAX_GROWTH_EXPONENT times the median at some
  smaller seq_len n,
was disturbed (a preempted thread waiting out scheduler slices gives every sample the same
delay, so its own interval looks tight). So was a figure faster than the machine: TFLOP/s more
than ABOVE_PEAK_MARGIN times the measured matmul peak (float32 and float64), or GB/s that much
above the measured copy bandwidth on a working set no cache holds. Such a figure is measured
again; if it stays implausible it is kept with `stable: false`.
"""
from __future__ import annotations

from harness.case import series_key, sweep_len
from harness.measure.peaks import beyond_cache
from harness.units import duration

IMPLAUSIBLE_RATIO = 1.5
# A figure beyond a measured peak by more than the peak's own noise cannot be right.
ABOVE_PEAK_MARGIN = 1.25
FULL_PRECISION = ("float32", "float64")
MAX_GROWTH_EXPONENT = 4


def _timed(record: dict) -> bool:
    return record.get("status") == "ok" and (record.get("median_s") or 0) > 0


def implausible(records: list[dict]) -> dict[str, str]:
    """case_id -> why its median cannot be right, for every figure slower than a larger N's."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        if _timed(r):
            groups.setdefault(series_key(r), []).append(r)
    out = {}
    for members in groups.values():
        for r in members:
            why = (_beyond_peaks(r) or _slower_than_larger(r, members)
                   or _faster_growth(r, members))
            if why:
                out[r["case_id"]] = (f"its median {duration(r['median_s'])} is {why}, so this "
                                     "figure was disturbed; run it again on a quiet machine or "
                                     "with --repeats")
    return out


def _beyond_peaks(r: dict) -> str | None:
    """Faster than the machine can go: FLOP/s past its measured matmul peak (in a precision
    whose matmul is the ceiling: a low-precision call may compute in float32 past a slow
    bfloat16 matmul), or bytes per second past its copy bandwidth on a working set too large
    for any cache (peaks.beyond_cache)."""
    limit = 100 * ABOVE_PEAK_MARGIN
    pct = r.get("pct_of_peak")
    if pct and pct > limit and r.get("dtype") in FULL_PRECISION:
        return f"{pct:.0f}% of the machine's measured matmul peak: more than it can compute"
    pct = r.get("pct_of_bandwidth")
    if pct and pct > limit and beyond_cache(r):
        return (f"{pct:.0f}% of the machine's measured copy bandwidth, on more bytes than that "
                "copy moved: more than its memory can deliver")
    return None


def _slower_than_larger(r: dict, members: list[dict]) -> str | None:
    larger = [o for o in members if sweep_len(o) > sweep_len(r)]
    if not larger:
        return None
    fastest = min(larger, key=lambda o: o["median_s"])
    ratio = r["median_s"] / fastest["median_s"]
    if ratio <= IMPLAUSIBLE_RATIO:
        return None
    return (f"{ratio:.1f}x the {duration(fastest['median_s'])} measured at the larger seq_len "
            f"{sweep_len(fastest)}: a larger problem cannot be that much faster")


def _faster_growth(r: dict, members: list[dict]) -> str | None:
    worst, other = 1.0, None
    for o in members:
        if sweep_len(o) < sweep_len(r):
            excess = r["median_s"] / o["median_s"] / (
                IMPLAUSIBLE_RATIO * (sweep_len(r) / sweep_len(o)) ** MAX_GROWTH_EXPONENT)
            if excess > worst:
                worst, other = excess, o
    if other is None:
        return None
    return (f"{r['median_s'] / other['median_s']:.0f}x the {duration(other['median_s'])} "
            f"measured at seq_len {other['seq_len']}: attention's cost cannot grow that fast "
            f"(beyond N^{MAX_GROWTH_EXPONENT})")


def is_unstable(record: dict) -> bool:
    """A timed figure the harness could not vouch for (`stable` false)."""
    return record.get("status") == "ok" and record.get("stable") is False


def unstable(records: list[dict]) -> list[dict]:
    return [r for r in records if is_unstable(r)]


def advice(records: list[dict]) -> str | None:
    """The end-of-run line about unstable figures, None when there are none."""
    bad = unstable(records)
    timed = sum(1 for r in records if r.get("status") == "ok")
    if not bad:
        return None
    return (f"{len(bad)} of {timed} figures are unstable (marked ~): the machine was busy or a "
            "figure contradicts its neighbours. Close other programs, give the run fewer "
            "--threads than cores, or measure each case in several processes with --repeats 3")
