"""Figures that cannot be right within their configuration, and the stability of a whole run.

Within one implementation and configuration, attention's work grows with seq_len, and no faster
than N^4 even across a cache cliff (its work grows as N^2; a score matrix leaving the cache was
measured at about N^3.4 over one doubling). So:
- a median more than IMPLAUSIBLE_RATIO times the median at some larger seq_len, or
- a median more than IMPLAUSIBLE_RATIO · (N / n)^MAX_GROWTH_EXPONENT times the median at some
  smaller seq_len n,
was disturbed (a preempted thread waiting out scheduler slices gives every sample the same
delay, so its own interval looks tight). Such a figure is measured again; if it stays
implausible it is kept with `stable: false`.
"""
from __future__ import annotations

from harness.case import series_key, sweep_len
from harness.units import duration

IMPLAUSIBLE_RATIO = 1.5
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
            why = _slower_than_larger(r, members) or _faster_growth(r, members)
            if why:
                out[r["case_id"]] = (f"its median {duration(r['median_s'])} is {why}, so this "
                                     "figure was disturbed; run it again on a quiet machine or "
                                     "with --repeats")
    return out


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
