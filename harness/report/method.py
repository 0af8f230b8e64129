"""What ran and how it was measured: the machine facts from env.json, and the method text,
generated from the constants the code measures with (the timer's, the tolerance policy's, the
FLOP model's, the scaling fit's, the memory probes') and the timing settings of the run's plan,
so the text cannot drift from what the harness does.

The constants are read through their modules when the text is made (`timer.MIN_WARMUP_CALLS`,
not a copy taken at import), so the text follows them.
"""
from __future__ import annotations

from collections import Counter

from harness.analysis import scaling, series, stability, summary
from harness.measure import clocks, contention, cuda, flops, memory, timer
from harness.problem import reference
from harness.run import runner
from harness.report.format import fmt_mib, fmt_tflops, percent
from harness.units import duration


def machine(env: dict) -> list[tuple[str, str]]:
    git = env.get("git") or {}
    commit = git.get("commit") or "unknown"
    if git.get("dirty"):
        commit += " (with uncommitted changes)"
    gpus = env.get("gpus") or []
    rows = [("suite", str(env.get("suite", "?"))),
            ("started", str(env.get("started_at", "?")))]
    if env.get("resumed_at"):
        rows.append(("resumed", ", ".join(map(str, env["resumed_at"]))))
    rows += [("git commit", commit),
             ("CPU", f"{env.get('cpu', '?')} ({env.get('physical_cores', '?')} physical cores, "
                     f"{env.get('logical_cores', '?')} logical)"),
             ("GPU", "; ".join(f"{g.get('name')} (driver {g.get('driver')}, {g.get('memory')})"
                               for g in gpus) or "none"),
             ("threads", f"{env.get('threads', '?')} intra-op threads for every framework")]
    workers = env.get("workers") or {}
    if workers:
        rows.append(("workers", "; ".join(
            f"{name}: {info.get('threads', '?')} threads" + (
                f", CUDA {info['cuda']}" if info.get("cuda") else "")
            for name, info in sorted(workers.items()))))
    rows.append(("Python", f"{env.get('python', '?')} on {env.get('platform', '?')}"))
    packages = env.get("packages") or {}
    rows.append(("packages", ", ".join(f"{k} {v}" for k, v in packages.items() if v) or "?"))
    blas = "; ".join(f"{lib}: {name}" for lib, name in sorted((env.get("blas") or {}).items())
                     if name)
    if blas:
        rows.append(("BLAS", blas))
    missing = [k for k, v in packages.items() if not v]
    if missing:
        rows.append(("not installed", ", ".join(missing)))
    for device, entry in sorted((env.get("peaks") or {}).items()):
        parts = [f"{dtype} matmul {fmt_tflops(v)} TFLOP/s"
                 for dtype, v in sorted((entry.get("matmul_tflops") or {}).items())]
        if entry.get("bandwidth_gbs"):
            parts.append(f"copy bandwidth {entry['bandwidth_gbs']:.1f} GB/s")
        parts += [f"{dtype}: {err}" for dtype, err in sorted((entry.get("errors") or {}).items())]
        parts += [f"{clock} clock resolves {duration(seconds)} per sample (the central 95% of "
                  "empty samples; a block of B calls resolves B times finer)"
                  for clock, seconds in sorted((entry.get("timer_resolution_s") or {}).items())]
        rows.append((f"measured peaks ({device})", "; ".join(parts)))
    if not env.get("peaks"):
        rows.append(("measured peaks", f"not measured: {env['peaks_error']}"
                     if env.get("peaks_error") else "not measured in this run"))
    if env.get("mem_limit_bytes"):
        rows.append(("memory limit", f"{fmt_mib(env['mem_limit_bytes'])} MiB per case"))
    if env.get("argv"):
        rows.append(("command", " ".join(map(str, env["argv"]))))
    return rows


def machine_line(env: dict) -> str:
    """One line: CPU, threads, GPU."""
    gpus = env.get("gpus") or []
    line = f"{env.get('cpu', '?')}, {env.get('threads', '?')} threads"
    if gpus:
        line += ", GPU " + ", ".join(g.get("name", "?") for g in gpus)
    return line


def _calls(n: int) -> str:
    return f"{n} call" + ("" if n == 1 else "s")


def memory_methods(records: list[dict]) -> str:
    """The memory probes the run's records name, each with what it measures."""
    variants: dict[str, set] = {}
    for r in records:
        if r["mem_method"]:
            base, _, rest = str(r["mem_method"]).partition(" ")
            variants.setdefault(base, set()).add(rest.strip(" ()"))
    return "; ".join(
        f"{base}: {memory.METHODS.get(base, 'as named')}"
        + "".join(f" ({note})" for note in sorted(notes) if note)
        for base, notes in sorted(variants.items())) or "no memory was measured in this run"


def timer_text(records: list[dict]) -> str:
    """Each timer the run's records name, with how many it measured and what it is."""
    used = summary.timers_used(records) or Counter({timer.HOST: 0})
    return "; ".join(f"{name} ({used[name]} cases): {clocks.TIMERS.get(name, 'as named')}"
                     for name in sorted(used))


def flush_text() -> str:
    """The L2 flush rule, from harness.measure.cuda's constants."""
    return (f"before each sample timed with {clocks.CUDA_EVENT} or {clocks.CUDA_GRAPH}, the "
            f"L2 is flushed by zeroing a buffer of {cuda.FLUSH_FACTOR:g}× the device's L2 "
            f"(torch.cuda.get_device_properties(device).L2_cache_size), rounded up to whole "
            f"{fmt_mib(cuda.FLUSH_ROUND_BYTES)} MiB, or {fmt_mib(cuda.FALLBACK_FLUSH_BYTES)} MiB "
            "where the device reports no L2 size; the zeroing is queued before the start "
            "event, outside the timed region. Samples on the host clock are not flushed")


def _repeats_text(repeats: int) -> str:
    if repeats <= 1:
        return ("one worker process: the interval says how precise that process's median is, "
                "not how the next process would measure")
    return (f"{repeats} fresh worker processes, in passes over the suite; the median is the "
            f"geometric mean of the {repeats} processes' medians and its interval Student's t on "
            "their logs, so it includes process-to-process variance")


def method(run) -> list[tuple[str, str]]:
    """How the numbers were measured, from the settings and constants the run used."""
    t = run.timing
    confidence = percent(timer.CONFIDENCE)
    layers = any(r["level"] not in (None, "kernel") for r in run.records)
    floors = ", ".join(f"{d} {v:g}" for d, v in reference.ABS_FLOOR.items())
    flop_text = (f"4·D per unmasked score entry per (batch, head): 2·D for Q·Kᵀ and 2·D for P·V, "
                 f"softmax not counted; causal counts only the entries its mask keeps "
                 f"(N·(N+1)/2, top-left aligned); the attention core's backward is "
                 f"{flops.BACKWARD_FACTOR:g}× its forward")
    if layers:
        flop_text += (f"; the mha and encoder levels add their matrix products (projections, "
                      f"feed-forward) at 2 FLOPs per multiply-add, whose backward is "
                      f"{flops.MATMUL_BACKWARD_FACTOR:g}× forward")
    used = summary.timers_used(run.records)
    flushed = used.get(clocks.CUDA_EVENT) or used.get(clocks.CUDA_GRAPH)
    return [
        ("timer", timer_text(run.records) + "; the garbage collector is paused during warm-up "
                  "and sampling; each case runs in a worker process of its framework, one at "
                  "a time"),
        *([("L2 flush", flush_text())] if flushed else []),
        ("warm-up", f"the call runs for {duration(t.warmup_s)} (at least "
                    f"{_calls(timer.MIN_WARMUP_CALLS)}) and those calls are discarded; the "
                    "first of them is the call whose output is checked against the float64 "
                    "reference, so the coldest call is never a sample; warm-up is by time, on "
                    "the host clock, whatever the samples are timed with"),
        ("sampling", f"calls shorter than {duration(t.min_sample_s)} are timed in blocks and "
                     f"divided; samples are taken until the {confidence} confidence interval of "
                     f"the median (order statistics, distribution-free) is within "
                     f"±{percent(t.target_ci)} of the median, or {duration(t.budget_s)} of sampling "
                     f"is spent, or {t.max_samples} samples are taken, never fewer than "
                     f"{t.min_samples}; a case is killed after {duration(t.timeout_s)}. "
                     f"Settings from {run.timing_source}."),
        ("statistics", f"the median of the samples with its {confidence} CI (shown as ±% of the "
                       "median, the CI's half-width) and the interquartile range; a † marks a "
                       "case whose interval did not reach the target within its budget"),
        ("stability", "around each case's warm-up and sampling the worker reads the kernel's "
                      "counters: CPU pressure (/proc/pressure/cpu), its threads' run-queue wait, "
                      "hypervisor steal, involuntary context switches and CPU time over wall "
                      "(the contention field of each record), and the CPU time other "
                      "processes took (the machine's busy time, /proc/stat, less the worker's "
                      "own). A case is unstable when tasks "
                      f"waited for a CPU more than {percent(contention.LIMITS['cpu_pressure'])} "
                      "of the time (run-queue wait where there is no pressure information) "
                      "while other processes took more than "
                      f"{contention.LIMITS['other_cpu']:g} cores (undecided on windows too "
                      "short for the ticks: flagged), or steal exceeded "
                      f"{percent(contention.LIMITS['steal'])}; waiting caused only by the "
                      "implementation's own threads is named oversubscription and kept "
                      "stable; or when its median "
                      f"is more than {stability.IMPLAUSIBLE_RATIO:g}× the median at a larger "
                      f"seq_len of the same configuration, or more than "
                      f"{stability.IMPLAUSIBLE_RATIO:g}·(N/n)^{stability.MAX_GROWTH_EXPONENT}× "
                      "the median at a smaller n. Unstable cases are measured again after the "
                      f"others, at most {runner.MAX_REMEASURES}×; those still unstable are kept, "
                      "marked ~, left out of the scaling fits and never judged by the regression "
                      "gate"),
        ("repeats", f"each case was measured in {_repeats_text(t.repeats)}"),
        ("FLOPs", flop_text + ". TFLOP/s = FLOPs / median; percent of peak is over the matmul "
                              "throughput measured on this machine, per device and dtype"),
        ("tolerance", f"each output is compared with a float64 reference of the same inputs; "
                      f"max_abs_err must be at most max(floor, {reference.TOLERANCE_FACTOR:g} × "
                      f"the error of a naive computation in the case's dtype), floors: {floors}. "
                      "A wrong shape, a wrong output dtype or NaN/Inf is also a mismatch; "
                      "rel_err is the Frobenius norm of the difference over the reference's"),
        ("memory", "a pass of its own after timing: the extra memory one call needs beyond its "
                   f"inputs (temporaries and output). Methods in this run: "
                   f"{memory_methods(run.records)}"),
        ("scaling", f"local exponents between neighbouring seq_lens, with intervals from the "
                    f"medians' {percent(timer.CONFIDENCE)} CIs (none taken as tighter than "
                    f"±{percent(series.MIN_REL_UNCERTAINTY)}) added in quadrature; one exponent "
                    f"fitted over the largest {scaling.FIT_POINTS} seq_lens "
                    f"({percent(scaling.FIT_CONFIDENCE)} CI, Student's t), shown only when the "
                    "points are consistent with one power law (chi-square of the weighted "
                    f"residuals, p ≥ {scaling.POWER_LAW_ALPHA:g}) and its interval is within "
                    f"±{scaling.MAX_HALF_WIDTH:g}; a crossover only where the order is "
                    "significant on both sides (the intervals apart, and not within "
                    f"{percent(scaling.CROSSOVER_MARGIN - 1)}: anything closer is a tie)"),
    ]
