"""What a sample clock can resolve on this machine, measured rather than assumed.

A sample is the clock's span around a block of calls. Timing a block of nothing, many times,
leaves only the clock's own cost and its jitter: the spread of those readings (the central 95%,
so one interrupt does not define it) is the smallest change of one sample the clock can
vouch for. A sample of B calls divides that by B, so a case's resolution is
`resolution_s / calls_per_sample` (`per_call`): with blocks, a host clock resolves a median far
below a microsecond. The regression gate uses it as the smallest slowdown it may call
(harness.analysis.compare); what limits a comparison beyond it (process-to-process and
run-to-run variance) is what repeats and interleaving measure.

Measured once per run with the machine's peaks (harness.measure.peaks), for every clock a case
on that device may get, and kept in env.json under `peaks.<device>.timer_resolution_s`.
"""
from __future__ import annotations

import numpy as np

EMPTY_SAMPLES = 2000
SPREAD = (2.5, 97.5)  # the central 95% of empty readings
SAME_CLOCK = {"cuda_graph": "cuda_event"}  # a graph replay is read by the same CUDA events


def _nothing() -> None:
    return None


def empty_readings(sample_clock, samples: int = EMPTY_SAMPLES) -> np.ndarray:
    """Seconds the clock reads around a block of one empty call, `samples` times, taken by
    the harness's own sampling loop (harness.measure.timer.Timer), hooks and all."""
    from harness.measure.timer import Timer
    from harness.spec import TimingSettings

    timer = Timer(_nothing, _nothing, TimingSettings(), sample_clock=sample_clock)
    try:
        return np.asarray(timer.take(samples), dtype=np.float64)
    finally:
        timer.release()


def resolution_s(readings) -> float:
    """The spread of empty readings: the central 95%'s width (never below one nanosecond, the
    host clock's unit)."""
    low, high = np.percentile(np.asarray(readings, dtype=np.float64), SPREAD)
    return max(float(high - low), 1e-9)


def measure_resolutions(device: str, timers: list[str]) -> dict[str, float]:
    """{timer: resolution in seconds} for the sample clocks named, on `device`."""
    from harness.measure import clocks

    out = {}
    for timer in timers:
        clock = clocks.sample_clock(timer, device)
        out[timer] = resolution_s(empty_readings(clock))
    return out


def per_call(resolutions: dict | None, timer: str | None, calls_per_sample: int | None
             ) -> float | None:
    """A case's resolution: its clock's over its block size; None where none was measured."""
    resolutions = resolutions or {}
    value = resolutions.get(timer or "") or resolutions.get(SAME_CLOCK.get(timer or "", ""))
    if not isinstance(value, (int, float)) or value <= 0:
        return None
    return float(value) / max(int(calls_per_sample or 1), 1)
