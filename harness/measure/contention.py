"""Was this process allowed to run while it was timed? Signals read by the worker itself around
each sample window, and the verdict drawn from them.

On a machine with as many busy threads as cores, every call whose thread is preempted waits a
scheduler slice, and the samples agree with each other while all being wrong: a tight interval
cannot reveal it. The kernel can. Around the window the worker reads:

- `cpu_pressure`: the share of the window in which some task on the machine waited for a CPU
  (/proc/pressure/cpu, "some"), where the kernel has pressure stall information. It decides.
- `run_queue_wait`: seconds this process's threads spent runnable but not running, per second
  of the window (/proc/self/task/*/schedstat), up to the thread count. It decides where there is
  no pressure information; beside it, it says whether this process was the one kept waiting.
- `steal`: the share of the machine's CPU time the hypervisor gave to other guests (/proc/stat).
- `involuntary_switches_per_s`: preemptions of this process (getrusage), and `cpu_per_thread`:
  process CPU time over wall time over the thread count (near 1 when every thread ran all the
  time and the call keeps them all busy). Recorded for diagnosis; calls that use fewer threads
  than they are given make these low on a quiet machine, so they decide nothing.

A figure that is None was not available here (another OS, an older kernel, no schedstats).
"""
from __future__ import annotations

import glob
import os
import resource
import time
from dataclasses import dataclass

# A window is contended when, for more than these shares of it, tasks waited for a CPU
# (pressure; where the kernel has no pressure information, this process's own run-queue wait
# stands in) or the hypervisor gave the CPU to other guests (steal). Measured on a 2-core VM:
# quiet, pressure <= 0.16 (TensorFlow's own extra threads cause most of it); one busy process
# beside a 2-thread worker, pressure 0.49-0.51 and run-queue wait 0.5-0.9; two, both near 1.
LIMITS = {"cpu_pressure": 0.30, "run_queue_wait": 0.30, "steal": 0.10}
MIN_STEAL_WINDOW_S = 0.2  # /proc/stat counts in 10 ms ticks: shorter windows cannot tell

SIGNALS = ("window_s", "run_queue_wait", "cpu_pressure", "steal", "involuntary_switches_per_s",
           "cpu_per_thread")


@dataclass(frozen=True)
class Reading:
    wall_ns: int
    cpu_s: float
    involuntary: int
    wait_ns: int | None
    pressure_us: int | None
    steal_ticks: tuple[int, int] | None  # (steal, all) summed over CPUs


def _read_int_field(path: str, index: int) -> int | None:
    try:
        with open(path) as fh:
            return int(fh.read().split()[index])
    except (OSError, ValueError, IndexError):
        return None


def _run_queue_wait_ns() -> int | None:
    waits = [_read_int_field(p, 1) for p in glob.glob("/proc/self/task/*/schedstat")]
    waits = [w for w in waits if w is not None]
    return sum(waits) if waits else None


def _pressure_us() -> int | None:
    try:
        with open("/proc/pressure/cpu") as fh:
            for line in fh:
                if line.startswith("some"):
                    return int(line.rsplit("total=", 1)[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _steal_ticks() -> tuple[int, int] | None:
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(fields) < 8:
        return None
    return fields[7], sum(fields[:8])


def read() -> Reading:
    """The counters now (cheap: a few small /proc reads)."""
    return Reading(wall_ns=time.perf_counter_ns(), cpu_s=time.process_time(),
                   involuntary=resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw,
                   wait_ns=_run_queue_wait_ns(), pressure_us=_pressure_us(),
                   steal_ticks=_steal_ticks())


def signals(before: Reading, after: Reading, threads: int) -> dict:
    """The window's figures (see the module docstring); None where a counter is missing."""
    wall = max((after.wall_ns - before.wall_ns) / 1e9, 1e-9)
    figures = {"window_s": round(wall, 6), "run_queue_wait": None, "cpu_pressure": None,
               "steal": None,
               "involuntary_switches_per_s":
                   round((after.involuntary - before.involuntary) / wall, 2),
               "cpu_per_thread": round((after.cpu_s - before.cpu_s) / wall / max(threads, 1), 4)}
    if before.wait_ns is not None and after.wait_ns is not None:
        figures["run_queue_wait"] = round(max(after.wait_ns - before.wait_ns, 0) / 1e9 / wall, 4)
    if before.pressure_us is not None and after.pressure_us is not None:
        figures["cpu_pressure"] = round(min((after.pressure_us - before.pressure_us) / 1e6 / wall,
                                            1.0), 4)
    if before.steal_ticks and after.steal_ticks and wall >= MIN_STEAL_WINDOW_S:
        total = after.steal_ticks[1] - before.steal_ticks[1]
        if total > 0:
            figures["steal"] = round((after.steal_ticks[0] - before.steal_ticks[0]) / total, 4)
    return figures


def thread_count() -> int:
    """The threads the worker was given (every worker starts with OMP_NUM_THREADS set), else
    the CPUs this process may use."""
    try:
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    except (KeyError, ValueError):
        pass
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def verdict(figures: dict | None) -> str | None:
    """None when the window was clean, else a sentence saying what was seen and what to do."""
    if not figures:
        return None
    seen = []
    wait, pressure, steal = (figures.get(k) for k in ("run_queue_wait", "cpu_pressure", "steal"))
    if pressure is not None:
        if pressure > LIMITS["cpu_pressure"]:
            seen.append(f"tasks waited for a CPU during {pressure:.0%} of it")
    elif wait is not None and wait > LIMITS["run_queue_wait"]:
        seen.append(f"its threads waited for a CPU {wait:.0%} of the time")
    if steal is not None and steal > LIMITS["steal"]:
        seen.append(f"the hypervisor took {steal:.0%} of the CPU time")
    if not seen:
        return None
    # The kernel's counters cannot say whose threads were waiting: other programs', or the
    # implementation's own beyond the cores (XLA and TensorFlow start more than they are given)
    return ("threads competed for the CPU while this case was timed (" + "; ".join(seen) +
            "): other programs, or more threads of its own than cores; close other programs, "
            "or run with fewer --threads than cores")


def worst(windows: list[dict]) -> dict:
    """The figures of several windows (repeats) in one dict: each figure at its worst."""
    out: dict = {}
    for key in SIGNALS:
        values = [w.get(key) for w in windows if w and w.get(key) is not None]
        if not values:
            out[key] = None
        elif key == "window_s":
            out[key] = round(sum(values), 6)
        elif key == "cpu_per_thread":
            out[key] = min(values)
        else:
            out[key] = max(values)
    return out
