"""The one timer: every duration attnbench reports comes out of `Timer`'s sampling loop.

Method (the report's "how it was measured" is generated from these constants and the suite's
TimingSettings):
1. Warm-up by time: the call (followed by `sync`) runs until `warmup_s` has passed and at least
   MIN_WARMUP_CALLS calls were made; those calls are discarded. The first of them may be the
   call whose output the harness checks (`first_call`): the coldest call is never a sample.
2. Blocks: if the fastest warm-up call was shorter than `min_sample_s`, each sample times a
   block of calls and divides, so the clock's own cost stays negligible.
3. Samples until the stop rule (`enough`) holds: the 95% confidence interval of the median
   (distribution-free, from order statistics) is within ±`target_ci` of the median, or
   `budget_s` of sampling is spent (wall seconds inside the sampling loop; in A/B, of one
   side's blocks), or `max_samples` are taken; never fewer than `min_samples`.
4. A sample's duration comes from the Timer's sample clock: `HostClock` (the host clock
   around the block, read after `sync`, so device work is inside the sample), or one of
   harness.measure.cuda's (CUDA events around the block with the L2 flushed before it; CUDA-
   graph replay); harness.measure.clocks chooses one per case. A clock is hooks, not a loop of
   its own: `ready(call)` once before the first sample gives the call the samples run;
   `before_sample()` runs outside the timed region; `start()` and `stop()` bracket the block
   (`stop` before the sync); `elapsed_s(wall_ns)` reads the sample after the sync; `release()`
   ends it. Warm-up is by time, so it always runs on the host clock.
The garbage collector is paused during warm-up and sampling, as `timeit` does.
0. Compiled or jitted calls: the very first call (tracing, compilation, autotuning, one run) is
   timed alone as `compile_s` (`compile_call`), before step 1; it is no warm-up call, no sample
   and sizes no block.

A/B (`take` in blocks, `enough` between them), profiling and the pytest-benchmark path use
the same loop.
"""
from __future__ import annotations

import gc
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any, Callable, Sequence

import numpy as np

from harness.measure import contention
from harness.spec import TimingSettings

MIN_WARMUP_CALLS = 2
CONFIDENCE = 0.95
CHECK_EVERY = 0.1  # re-evaluate the stop rule after this fraction more samples (it costs a test)


@contextmanager
def gc_paused():
    """No garbage collection inside the block: a collection would land inside some sample."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@lru_cache(maxsize=4096)
def median_ci_ranks(n: int, confidence: float = CONFIDENCE) -> tuple[int, int]:
    """The order statistics (0-based ranks into the sorted samples) that bound the median's
    distribution-free CI: the binomial quantiles scipy's `quantile_test` uses (Binomial(n, ½)'s
    `ppf` and `isf` of the tail), computed once per sample count, because the stop rule asks
    after nearly every sample. They come from scipy.special's binomial distribution functions:
    scipy.stats would cost every worker a second to import and memray more libraries to patch
    on each memory pass."""
    from scipy.special import bdtr, bdtrc

    tail = (1 - confidence) / 2
    k = np.arange(n + 1)
    ppf = int(np.argmax(bdtr(k, n, 0.5) >= tail))  # the least k with P(X <= k) >= tail
    isf = int(np.argmax(bdtrc(k, n, 0.5) <= tail))  # the least k with P(X > k) <= tail
    return ppf - 1, isf


def median_ci(samples, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Distribution-free CI of the median (binomial order statistics, as scipy's
    `quantile_test(x, p=0.5).confidence_interval`).

    With fewer than 6 samples no 95% interval exists; [min, max] is returned instead.
    """
    x = np.sort(np.asarray(samples, dtype=np.float64))
    low, high = median_ci_ranks(len(x), confidence)
    if low < 0 or high >= len(x):
        return float(x[0]), float(x[-1])
    return float(x[low]), float(x[high])


def relative_half_width(median: float, ci: tuple[float, float]) -> float:
    """Half the CI's width over the median: the one precision figure (`ci_rel`)."""
    low, high = ci
    return (high - low) / 2 / median if median > 0 else math.inf


def ci_rel(samples) -> float:
    """`relative_half_width` of raw samples."""
    return relative_half_width(float(np.median(samples)), median_ci(samples))


@dataclass(frozen=True)
class Samples:
    """Per-call times in seconds and how they were taken; the statistics every record carries.

    One attribute or property per field of the record's `Timing` part (harness.store.schema),
    named as the field and listed in TIMING (tests/test_schema.py holds the two to the same
    names); `to_record` reads them by those names, with the contention verdict."""

    per_call_s: tuple[float, ...]
    calls_per_sample: int = 1
    warmup_calls: int = 0
    timed_s: float = 0.0  # wall seconds inside warm-up and sampling
    target_ci: float = TimingSettings.target_ci
    contention: dict | None = None  # harness.measure.contention.signals over warm-up and sampling
    timer: str | None = None  # the sample clock's name (harness.measure.clocks.TIMERS)

    TIMING = ("median_s", "ci_low_s", "ci_high_s", "ci_rel", "converged", "iqr_s", "min_s",
              "mean_s", "std_s", "n_samples", "calls_per_sample", "warmup_calls", "timed_s",
              "samples_s", "timer")

    @cached_property
    def array(self) -> np.ndarray:
        return np.asarray(self.per_call_s, dtype=np.float64)

    @cached_property
    def median(self) -> float:
        return float(np.median(self.array))

    @cached_property
    def ci(self) -> tuple[float, float]:
        return median_ci(self.array)

    @cached_property
    def ci_rel(self) -> float:
        return relative_half_width(self.median, self.ci)

    @property
    def converged(self) -> bool:
        return bool(self.ci_rel <= self.target_ci)

    # The Timing part's figures, under the record's names.
    @property
    def median_s(self) -> float:
        return self.median

    @property
    def ci_low_s(self) -> float:
        return self.ci[0]

    @property
    def ci_high_s(self) -> float:
        return self.ci[1]

    @property
    def iqr_s(self) -> float:
        q25, q75 = np.percentile(self.array, [25, 75])
        return float(q75 - q25)

    @property
    def min_s(self) -> float:
        return float(self.array.min())

    @property
    def mean_s(self) -> float:
        return float(self.array.mean())

    @property
    def std_s(self) -> float:
        return float(self.array.std(ddof=1)) if len(self.array) > 1 else 0.0

    @property
    def n_samples(self) -> int:
        return int(len(self.array))

    @property
    def samples_s(self) -> list[float]:
        return [float(v) for v in self.array]

    def to_record(self) -> dict:
        """Every field of the record's Timing part, and the contention signals with their
        verdict (`stable`, `instability`: harness.measure.contention)."""
        instability = contention.verdict(self.contention)
        window = self.contention
        oversubscribed = contention.oversubscription(window)
        if oversubscribed:  # named, yet no disturbance: stays stable
            window = {**window, "oversubscribed": oversubscribed}
        return {**{name: getattr(self, name) for name in self.TIMING},
                "contention": window,
                # unknown (None) where no signals were read: never called stable unwatched
                "stable": None if self.contention is None else instability is None,
                "instability": instability}


def calls_per_sample(fastest_call_s: float, min_sample_s: float) -> int:
    """Calls per sample so that a sample lasts at least `min_sample_s` (step 2 above)."""
    return max(1, math.ceil(min_sample_s / fastest_call_s)) if fastest_call_s > 0 else 1


def enough(samples: Sequence[float], spent_s: float, settings: TimingSettings,
           check_ci: bool = True) -> bool:
    """The stop rule (step 3 above), for the run's loop and A/B's blocks alike: True once
    `max_samples` are taken or, with at least `min_samples`, once `spent_s` reaches `budget_s`
    or (where `check_ci`) the median's CI is within ±`target_ci`.

    `spent_s` is what the budget counts, the same everywhere: wall seconds inside the sampling
    loop, from the start of its first sample (each sample's block, its sync and its clock's
    hooks, such as an L2 flush). In A/B a side's loop runs in blocks, between the other side's
    turns: that side's blocks are summed, and nothing outside them counts."""
    n = len(samples)
    if n >= settings.max_samples:
        return True
    if n < settings.min_samples:
        return False
    return spent_s >= settings.budget_s or (check_ci and ci_rel(samples) <= settings.target_ci)


def adaptive_stop(settings: TimingSettings) -> Callable[[list[float], int], bool]:
    """`enough` as the run's loop asks it after every sample (`stop(samples, spent_ns)`), with
    the CI, which costs a sort, tested only after CHECK_EVERY more samples."""
    next_check = settings.min_samples

    def stop(samples: list[float], spent_ns: int) -> bool:
        nonlocal next_check
        due = len(samples) >= next_check
        if enough(samples, spent_ns / 1e9, settings, check_ci=due):
            return True
        if due:
            next_check = len(samples) + max(1, int(len(samples) * CHECK_EVERY))
        return False

    return stop


HOST = "host"


class HostClock:
    """The default sample clock: a sample is the host clock's span around the block, read
    after `sync`, so device work is inside it (step 4 above)."""

    name = HOST

    def ready(self, call: Callable[[], Any]) -> Callable[[], Any]:
        return call

    def before_sample(self) -> None:
        return None

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None

    def elapsed_s(self, wall_ns: int) -> float:
        return wall_ns / 1e9

    def release(self) -> None:
        return None


class Timer:
    """Times one prepared call. `measure()` is a whole run's timing; `first_call`, `warm_up`
    and `take` are its steps, for callers that interleave (A/B) or wrap them (profiling)."""

    def __init__(self, call: Callable[[], Any], sync: Callable[[], None],
                 settings: TimingSettings, clock: Callable[[], int] = time.perf_counter_ns,
                 sample_clock=None):
        self.call, self.sync, self.settings, self.clock = call, sync, settings, clock
        self.sample_clock = sample_clock or HostClock()
        self.sample_call: Callable[[], Any] | None = None  # what samples run (sample_clock.ready)
        self.warmup_calls = 0
        self.fastest_call_s = math.inf
        self.calls_per_sample = 1
        self.timed_ns = 0
        self.compile_s: float | None = None  # None: nothing was compiled (eager)

    def _one_call(self):
        t0 = self.clock()
        out = self.call()
        self.sync()
        elapsed = self.clock() - t0
        self.timed_ns += elapsed
        self.warmup_calls += 1
        self.fastest_call_s = min(self.fastest_call_s, elapsed / 1e9)
        return out

    def compile_call(self) -> float:
        """Step 0: the first call of compiled code, timed alone; its output is dropped (the
        checked call comes next). Nothing about it enters the warm-up or the samples."""
        with gc_paused():
            t0 = self.clock()
            out = self.call()
            self.sync()
            self.compile_s = (self.clock() - t0) / 1e9
        del out
        return self.compile_s

    def first_call(self):
        """One warm-up call, its output returned: the first is the call the harness checks."""
        with gc_paused():
            return self._one_call()

    def warm_up(self) -> int:
        """Warm up by time, then size the blocks from the fastest warm-up call."""
        import scipy.special  # noqa: F401  (the stop rule's; its import stays out of samples)

        with gc_paused():
            start = self.clock() - self.timed_ns
            while (self.warmup_calls < MIN_WARMUP_CALLS
                   or self.clock() - start < self.settings.warmup_s * 1e9):
                self._one_call()
        self.calls_per_sample = calls_per_sample(self.fastest_call_s, self.settings.min_sample_s)
        return self.calls_per_sample

    def loop(self, stop: Callable[[list[float], int], bool]) -> list[float]:
        """The sampling loop: one block per sample until `stop(samples, spent_ns)` says enough
        (`spent_ns`: the loop's wall time so far, what the budget counts; see `enough`). The
        sample clock's hooks run around each block (step 4 above)."""
        if self.sample_call is None:  # once, after any warm-up: a CUDA graph is captured here
            self.sample_call = self.sample_clock.ready(self.call)
        call, sync, clock, cps = self.sample_call, self.sync, self.clock, self.calls_per_sample
        sample_clock = self.sample_clock
        samples: list[float] = []
        with gc_paused():
            begin = clock()
            while True:
                sample_clock.before_sample()
                t0 = clock()
                sample_clock.start()
                for _ in range(cps):
                    call()
                sample_clock.stop()
                sync()
                t1 = clock()
                self.timed_ns += t1 - t0
                samples.append(sample_clock.elapsed_s(t1 - t0) / cps)
                if stop(samples, t1 - begin):
                    return samples

    def take(self, n: int) -> list[float]:
        """Exactly `n` samples of the current block size."""
        return self.loop(lambda samples, now: len(samples) >= n)

    def samples(self, per_call_s, window: dict | None = None) -> Samples:
        return Samples(tuple(per_call_s), self.calls_per_sample, self.warmup_calls,
                       self.timed_ns / 1e9, self.settings.target_ci, window,
                       self.sample_clock.name)

    def release(self) -> None:
        """Free what the sample clock holds (a captured graph, a flush buffer's graph pool)."""
        self.sample_call = None
        self.sample_clock.release()

    def measure(self) -> Samples:
        """Warm-up (continuing from `first_call`, if it was made), then adaptive sampling,
        with the contention signals read around both."""
        before = contention.read()
        self.warm_up()
        per_call = self.loop(adaptive_stop(self.settings))
        window = contention.signals(before, contention.read(), contention.thread_count())
        return self.samples(per_call, window)


def time_once(step: Callable[[], Any], sync: Callable[[], None]) -> tuple[Any, float]:
    """A setup step an adapter makes in `prepare` (a block mask, say), run once by the harness's
    clock and `sync`: (its result, its seconds). Never part of a timed call."""
    t0 = time.perf_counter_ns()
    result = step()
    sync()
    return result, (time.perf_counter_ns() - t0) / 1e9


def measure(call, sync, settings: TimingSettings, sample_clock=None) -> Samples:
    """Time `call` followed by `sync` with the full method above (on the host clock unless a
    sample clock is given)."""
    timer = Timer(call, sync, settings, sample_clock=sample_clock)
    try:
        return timer.measure()
    finally:
        timer.release()
