"""One timer for every implementation: warm-up by time, calibrated blocks, adaptive sampling.

Method (the README repeats it): run the call until `warmup_s` has passed (at least two calls),
discard those. If one call is shorter than `min_sample_s`, each sample times a block of calls
and divides, so the clock's own cost stays negligible. Then take samples until the 95%
confidence interval of the median (distribution-free, from order statistics) is within
±`target_ci` of the median, or `budget_s` is spent, or `max_samples` are taken; never fewer
than `min_samples`. `sync` is called before the clock is read, so device work is included.
"""
from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class TimingSettings:
    warmup_s: float = 0.1
    min_samples: int = 5
    max_samples: int = 1000
    target_ci: float = 0.02  # half-width of the median's 95% CI, relative to the median
    budget_s: float = 2.0  # sampling time per case after warm-up
    min_sample_s: float = 5e-5  # calls shorter than this are timed in blocks
    timeout_s: float = 300.0  # whole case (prepare, check, warm-up, sampling), enforced by the runner


def median_ci(samples: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free CI of the median (binomial order statistics, via scipy).

    With fewer than 6 samples no 95% interval exists; [min, max] is returned instead.
    """
    from scipy.stats import quantile_test

    ci = quantile_test(samples, p=0.5).confidence_interval(confidence)
    low, high = float(ci.low), float(ci.high)
    if math.isnan(low) or math.isnan(high):
        return float(samples.min()), float(samples.max())
    return low, high


def summarize(samples_s: list[float], target_ci: float) -> dict:
    """The statistics every record carries, from per-call times in seconds."""
    x = np.asarray(samples_s, dtype=np.float64)
    median = float(np.median(x))
    low, high = median_ci(x)
    q25, q75 = np.percentile(x, [25, 75])
    ci_rel = (high - low) / 2 / median if median > 0 else math.inf
    return {
        "median_s": median,
        "ci_low_s": low,
        "ci_high_s": high,
        "ci_rel": ci_rel,
        "converged": bool(ci_rel <= target_ci),
        "iqr_s": float(q75 - q25),
        "min_s": float(x.min()),
        "mean_s": float(x.mean()),
        "std_s": float(x.std(ddof=1)) if len(x) > 1 else 0.0,
        "n_samples": int(len(x)),
        "samples_s": [float(v) for v in x],
    }


def measure(call: Callable[[], object], sync: Callable[[], None],
            settings: TimingSettings) -> dict:
    """Time `call` (followed by `sync`) and return `summarize`'s fields plus the block size.

    The garbage collector is paused while sampling (as `timeit` does), and scipy is imported
    before the warm-up, so neither lands inside a sample.
    """
    import scipy.stats  # noqa: F401  (median_ci needs it; import cost stays out of the loop)

    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        return _measure(call, sync, settings)
    finally:
        if gc_was_enabled:
            gc.enable()


def _measure(call, sync, settings: TimingSettings) -> dict:
    clock = time.perf_counter_ns
    start = clock()
    warm_calls = 0
    while warm_calls < 2 or (clock() - start) < settings.warmup_s * 1e9:
        call()
        sync()
        warm_calls += 1
    per_call_s = (clock() - start) / 1e9 / warm_calls
    calls_per_sample = max(1, math.ceil(settings.min_sample_s / per_call_s)) if per_call_s > 0 else 1

    samples: list[float] = []
    deadline = clock() + settings.budget_s * 1e9
    next_check = settings.min_samples
    while True:
        t0 = clock()
        for _ in range(calls_per_sample):
            call()
        sync()
        t1 = clock()
        samples.append((t1 - t0) / 1e9 / calls_per_sample)
        n = len(samples)
        if n >= settings.max_samples:
            break
        if n < settings.min_samples:
            continue
        if t1 >= deadline:
            break
        if n >= next_check:
            if summarize_ci_rel(samples) <= settings.target_ci:
                break
            next_check = n + max(1, n // 10)
    stats = summarize(samples, settings.target_ci)
    stats["calls_per_sample"] = calls_per_sample
    stats["warmup_calls"] = warm_calls
    return stats


def summarize_ci_rel(samples: list[float]) -> float:
    x = np.asarray(samples)
    median = float(np.median(x))
    low, high = median_ci(x)
    return (high - low) / 2 / median if median > 0 else math.inf
