"""One figure from R measurements of a case, each in a fresh worker process.

Samples taken in one process are not independent of each other: the process's memory layout,
the thread pool's placement, the allocator's state and the machine's mood that minute are shared
by all of them, so the interval from one process's samples is narrower than the figure's real
uncertainty (asv and pyperf measure in several processes for this reason). With R >= 2 repeats:

- each repeat's median is one observation (`repeat_medians_s`);
- `median_s` is their geometric mean, and its 95% interval is Student's t on the logs of the
  repeat medians, exp(mean ± t(R-1) · se), where se is the larger of the repeats' own spread
  (sd / √R) and the within-repeat precision (the repeats' median intervals pooled, / √R), so
  R repeats that agree by chance never claim more precision than their samples have;
- the samples of all repeats are kept, one after another, in `samples_s`, and
  `repeat_n_samples` says how many each contributed; `contention` holds each figure at its worst
  over the repeats, and each repeat's own under `per_repeat`.

With R = 1 the record is that repeat's own, with `repeat_medians_s` holding its one median.
"""
from __future__ import annotations

import math

import numpy as np

from harness.measure import contention
from harness.measure.timer import CONFIDENCE, Samples, relative_half_width

Z95 = 1.959964


def log_interval(medians, half_widths) -> tuple[float, float, float, float]:
    """(center, se, dof, t) on the log scale for repeat medians with their relative half-widths."""
    logs = np.log(np.asarray(medians, dtype=np.float64))
    r = len(logs)
    between = float(np.std(logs, ddof=1)) / math.sqrt(r)
    within = math.sqrt(float(np.mean(np.square(np.log1p(half_widths))))) / Z95 / math.sqrt(r)
    from scipy.stats import t

    dof = r - 1
    return float(logs.mean()), max(between, within), dof, float(t.ppf(0.5 + CONFIDENCE / 2, dof))


def combine(results: list[dict], target_ci: float) -> dict:
    """The record fields of R timed results (each `Samples.to_record()` plus the case's checks)."""
    first = results[0]
    medians = [r["median_s"] for r in results]
    sizes = [r["n_samples"] for r in results]
    merged = dict(first, repeat_medians_s=medians, repeat_n_samples=sizes)
    if len(results) == 1:
        return merged
    # the Timing part: spread, extremes and counts from every repeat's samples ...
    pooled = Samples(tuple(float(v) for r in results for v in r["samples_s"]),
                     max(r["calls_per_sample"] for r in results),
                     sum(r["warmup_calls"] for r in results),
                     sum(r["timed_s"] or 0.0 for r in results), target_ci, timer=first.get("timer"))
    merged.update(pooled.to_record())
    # ... with the median and its interval from the repeat medians (see above)
    center, se, _, t = log_interval(medians, [r["ci_rel"] for r in results])
    median = math.exp(center)
    low, high = math.exp(center - t * se), math.exp(center + t * se)
    rel = relative_half_width(median, (low, high))
    unstable = [r["instability"] for r in results if r.get("stable") is False]
    merged.update(
        median_s=median, ci_low_s=low, ci_high_s=high, ci_rel=rel, converged=bool(rel <= target_ci),
        harness_s=_summed([r.get("harness_s") for r in results]),
        peak_mem_bytes=_max_or_none([r.get("peak_mem_bytes") for r in results]),
        contention={**contention.worst([r.get("contention") for r in results]),
                    "per_repeat": [r.get("contention") for r in results]},
        # unknown when a repeat was not watched, as for one repeat (Samples.to_record)
        stable=False if unstable else (None if any(r.get("stable") is None for r in results)
                                       else True),
        instability=(f"{len(unstable)} of {len(results)} repeats: {unstable[0]}" if unstable
                     else None))
    return merged


def split(record: dict) -> list[dict]:
    """The repeats of a stored record, as `combine` takes them (a resumed run goes on from them).

    Each part keeps the record's check and memory fields; its statistics are recomputed from its
    own samples, and its contention figures and verdict are its own.
    """
    sizes = record.get("repeat_n_samples") or [record["n_samples"]]
    samples = record["samples_s"]
    windows = (record.get("contention") or {}).get("per_repeat") or [record.get("contention")]
    parts, start = [], 0
    for i, size in enumerate(sizes):
        share = size / sum(sizes)
        own = Samples(tuple(samples[start:start + size]), record["calls_per_sample"],
                      round(record["warmup_calls"] * share), (record["timed_s"] or 0.0) * share,
                      target_ci=1.0, contention=windows[i] if i < len(windows) else None,
                      timer=record.get("timer")).to_record()
        start += size
        harness = {k: v * share for k, v in (record.get("harness_s") or {}).items()}
        parts.append({**record, **own, "harness_s": harness or record.get("harness_s")})
    return parts


def _summed(steps: list[dict | None]) -> dict | None:
    """Each step's seconds over the repeats (None where no repeat kept any)."""
    out: dict[str, float] = {}
    for one in filter(None, steps):
        for name, seconds in one.items():
            out[name] = round(out.get(name, 0.0) + seconds, 4)
    return out or None


def _max_or_none(values):
    known = [v for v in values if v is not None]
    return max(known) if known else None
