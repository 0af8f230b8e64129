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
- `other_cpu`: CPU time taken by other processes during the window, in cores: the machine's
  busy time (/proc/stat) minus this worker's own (process CPU time, every thread), per second.
  It says whose threads competed: where tasks waited but other processes took next to nothing,
  the waiting threads were the implementation's own (more threads than cores: XLA and
  TensorFlow start more than they are given). That is how the implementation runs, not a
  disturbance: the figure stays stable and `oversubscription` names it. /proc/stat counts in
  10 ms ticks, so windows shorter than MIN_TICK_WINDOW_S leave it None (undecided: flagged as
  before, naming both possible causes).
- `own_threads`: this process's threads at the end of the window, beside `cores`.
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
# Other processes count as competitors above OTHER_CPU_LIMIT cores (ticks at both ends of a
# 0.2 s window on 2 cores can misread by 0.2; one busy process reads near 1).
LIMITS = {"cpu_pressure": 0.30, "run_queue_wait": 0.30, "steal": 0.10, "other_cpu": 0.30}
MIN_TICK_WINDOW_S = 0.2  # /proc/stat counts in 10 ms ticks: shorter windows cannot tell
TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

SIGNALS = ("window_s", "run_queue_wait", "cpu_pressure", "steal", "involuntary_switches_per_s",
           "cpu_per_thread", "other_cpu", "own_threads", "cores")


@dataclass(frozen=True)
class Reading:
    wall_ns: int
    cpu_s: float
    involuntary: int
    wait_ns: int | None
    pressure_us: int | None
    steal_ticks: tuple[int, int] | None  # (steal, all) summed over CPUs
    busy_ticks: int | None = None  # user, nice, system, irq, softirq summed over CPUs
    threads: int | None = None  # this process's threads


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


def process_cpu_ns(pid: int) -> int | None:
    """CPU time every thread of process `pid` has run, in ns (schedstat); None where it
    cannot be read."""
    times = [_read_int_field(p, 0) for p in glob.glob(f"/proc/{pid}/task/*/schedstat")]
    times = [t for t in times if t is not None]
    return sum(times) if times else None


def _pressure_us() -> int | None:
    try:
        with open("/proc/pressure/cpu") as fh:
            for line in fh:
                if line.startswith("some"):
                    return int(line.rsplit("total=", 1)[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cpu_ticks() -> tuple[tuple[int, int] | None, int | None]:
    """((steal, all), busy) from /proc/stat's first line, summed over CPUs."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None, None
    if len(fields) < 8:
        return None, None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (steal, sum(fields[:8])), user + nice + system + irq + softirq


def _thread_total() -> int | None:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return None


def read() -> Reading:
    """The counters now (cheap: a few small /proc reads)."""
    steal, busy = _cpu_ticks()
    return Reading(wall_ns=time.perf_counter_ns(), cpu_s=time.process_time(),
                   involuntary=resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw,
                   wait_ns=_run_queue_wait_ns(), pressure_us=_pressure_us(),
                   steal_ticks=steal, busy_ticks=busy, threads=_thread_total())


def cores() -> int:
    """The CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def signals(before: Reading, after: Reading, threads: int) -> dict:
    """The window's figures (see the module docstring); None where a counter is missing."""
    wall = max((after.wall_ns - before.wall_ns) / 1e9, 1e-9)
    figures = {"window_s": round(wall, 6), "run_queue_wait": None, "cpu_pressure": None,
               "steal": None,
               "involuntary_switches_per_s":
                   round((after.involuntary - before.involuntary) / wall, 2),
               "cpu_per_thread": round((after.cpu_s - before.cpu_s) / wall / max(threads, 1), 4),
               "other_cpu": None, "own_threads": after.threads, "cores": cores()}
    if before.wait_ns is not None and after.wait_ns is not None:
        figures["run_queue_wait"] = round(max(after.wait_ns - before.wait_ns, 0) / 1e9 / wall, 4)
    if before.pressure_us is not None and after.pressure_us is not None:
        figures["cpu_pressure"] = round(min((after.pressure_us - before.pressure_us) / 1e6 / wall,
                                            1.0), 4)
    if before.steal_ticks and after.steal_ticks and wall >= MIN_TICK_WINDOW_S:
        total = after.steal_ticks[1] - before.steal_ticks[1]
        if total > 0:
            figures["steal"] = round((after.steal_ticks[0] - before.steal_ticks[0]) / total, 4)
    if before.busy_ticks is not None and after.busy_ticks is not None and \
            wall >= MIN_TICK_WINDOW_S:
        busy_s = (after.busy_ticks - before.busy_ticks) / TICKS_PER_S
        figures["other_cpu"] = round(max(busy_s - (after.cpu_s - before.cpu_s), 0.0) / wall, 4)
    return figures


def thread_count() -> int:
    """The threads the worker was given (every worker starts with OMP_NUM_THREADS set), else
    the CPUs this process may use."""
    try:
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    except (KeyError, ValueError):
        return cores()


def _waited(figures: dict) -> str | None:
    """What says tasks waited for a CPU beyond the limit (pressure, else run-queue wait)."""
    wait, pressure = figures.get("run_queue_wait"), figures.get("cpu_pressure")
    if pressure is not None:
        return (f"tasks waited for a CPU during {pressure:.0%} of it"
                if pressure > LIMITS["cpu_pressure"] else None)
    if wait is not None and wait > LIMITS["run_queue_wait"]:
        return f"its threads waited for a CPU {wait:.0%} of the time"
    return None


def _own_threads_only(figures: dict) -> bool:
    """Tasks waited, yet other processes took next to no CPU: the waiting was this process's."""
    other = figures.get("other_cpu")
    return other is not None and other <= LIMITS["other_cpu"]


def verdict(figures: dict | None) -> str | None:
    """None when the window was clean (or only the implementation's own threads competed: see
    `oversubscription`), else a sentence saying what was seen and what to do."""
    if not figures:
        return None
    seen = []
    waited = _waited(figures)
    steal = figures.get("steal")
    if waited and not _own_threads_only(figures):
        seen.append(waited)
    if steal is not None and steal > LIMITS["steal"]:
        seen.append(f"the hypervisor took {steal:.0%} of the CPU time")
    if not seen:
        return None
    other = figures.get("other_cpu")
    if other is not None:
        who = (f"other processes took {other:.2f} cores' worth of CPU time; close other "
               "programs" if other > LIMITS["other_cpu"] else "close other programs")
        return "other programs competed for the CPU while this case was timed (" + \
            "; ".join(seen) + f"): {who}"
    # too short a window to tell whose threads were waiting
    return ("threads competed for the CPU while this case was timed (" + "; ".join(seen) +
            "): other programs, or more threads of its own than cores; close other programs, "
            "or run with fewer --threads than cores")


def oversubscription(figures: dict | None) -> str | None:
    """A sentence when the implementation's own threads were kept waiting (more of them busy
    than cores) while other processes took next to nothing: how it runs, not a disturbance."""
    if not figures or not _waited(figures) or not _own_threads_only(figures):
        return None
    threads, count = figures.get("own_threads"), figures.get("cores")
    many = f"{threads} threads on {count} cores" if threads and count else "its own threads"
    return (f"oversubscribed: {_waited(figures)}, yet other processes took only "
            f"{figures['other_cpu']:.2f} cores; its own threads competed ({many})")


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
