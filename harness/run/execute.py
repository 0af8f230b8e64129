"""Run one case in the current process: check support, prepare, check the output, time it.

`CaseRun` holds the phases; `run_case` takes them in one go (what a run worker does for each
case; tests call it directly), an A/B side (harness.run.ab_worker) one request at a time.
`execute` turns an exception into the case's status (`oom` or `error`) so one failure never
costs the run.
"""
from __future__ import annotations

import time
import traceback
from contextlib import ExitStack, contextmanager

from harness import registry
from harness.measure.clocks import sample_clock, select_timer
from harness.measure.kernels import kernel_pass
from harness.measure.memory import measure_peak
from harness.measure.timer import Timer
from harness.problem.check import check_output
from harness.problem.observable import unobservable
from harness.problem.truth import problem, tolerance_for
from harness.run import limits
from harness.spec import TimingSettings


def compiled_timer(case, prepared, settings: TimingSettings, framework: str | None = None) -> Timer:
    """A Timer for the prepared call on the case's sample clock (harness.measure.clocks: CUDA
    events for torch on CUDA, else the host clock; `framework` defaults to the registered
    adapter's); for compiled or jitted code its first call (tracing, compilation,
    autotuning) already made and timed apart as compile_s."""
    if framework is None:
        framework = registry.get(case.impl).framework
    clock = sample_clock(select_timer(case, framework, settings), case.device)
    timer = Timer(prepared.call, prepared.sync, settings, sample_clock=clock)
    if prepared.compiled:
        timer.compile_call()
    return timer


def checked_timer(case, prepared, settings: TimingSettings, timer: Timer | None = None,
                  framework: str | None = None) -> tuple[Timer, dict]:
    """A Timer for the prepared call whose first call after any compilation (the first warm-up
    call) was checked against the float64 reference; the check's result, with compile_s, the
    timer's name and the implementation's own `impl_info`. Every path that times a case
    starts here."""
    _, ref = problem(case)
    timer = timer or compiled_timer(case, prepared, settings, framework)
    out = timer.first_call()
    result = check_output(case, prepared, out, ref, tolerance_for(case))
    del out
    result.update(compile_s=timer.compile_s, timer=timer.sample_clock.name,
                  impl_info=prepared.info or None)
    return timer, result


class Steps:
    """Wall seconds of a case's untimed steps, the record's `harness_s`: where the harness's own
    time goes. A step that contains timed calls (the checked first call) leaves them out; they
    are in `timed_s`, compilation in `compile_s`."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str, timer: Timer | None = None):
        t0, timed_ns = time.perf_counter(), timer.timed_ns if timer else 0
        try:
            yield
        finally:
            spent = time.perf_counter() - t0 - ((timer.timed_ns - timed_ns) / 1e9 if timer else 0)
            self.seconds[name] = round(self.seconds.get(name, 0.0) + spent, 4)


class CaseRun:
    """One case's way through the harness, in the phases every path that times a case takes:
    the run worker's `run_case` drives them one after another; an A/B side
    (harness.run.ab_worker) answers a request per phase and samples in blocks, so base and head
    can take turns on the machine.

      start()    support check, the float64 truth and tolerance, the adapter's `prepare`
      check()    compilation (outside the cap), then the memory cap and the checked first call
      measure()  warm-up and adaptive sampling (A/B: `warm_up()`, then `take()` per block)
      finish()   the cap lifted, the kernel and memory passes; the record's `harness_s`
      close()    the cap lifted and the prepared call released, whatever happened before

    With `mem_limit`, what the checked and timed calls allocate beyond what the worker holds
    after `prepare` is capped, from the checked call to the end of sampling. Shared libraries
    are loaded before the cap: loading one under a tight RLIMIT_DATA can hang (OpenBLAS sizing
    its buffers), and that is not the case's cost. In mode fwd_bwd the call is forward and
    backward (see impls.base.Prepared): its output and gradients are checked, and the timing,
    kernel and memory passes measure both. Exceptions propagate (see `execute`).
    """

    def __init__(self, case, adapter, settings: TimingSettings, mem_limit: int | None = None):
        self.case, self.adapter, self.settings, self.mem_limit = case, adapter, settings, mem_limit
        self.steps = Steps()
        self.prepared = None
        self.timer: Timer | None = None
        self.cap = ExitStack()  # holds the memory cap between `check` and `finish`

    def start(self) -> dict | None:
        """The case's end if it ends here (`unsupported`, or `oom` of the harness's own truth);
        None once it is prepared."""
        reasons = self.adapter.unsupported(self.case)
        if reasons:
            return {"status": "unsupported", "reason": "; ".join(reasons)}
        try:
            with self.steps("truth"):
                inputs, _ = problem(self.case)
                tolerance_for(self.case)  # computed before the cap and outside the timed calls
                hidden = unobservable(self.case, inputs)
        except MemoryError as exc:  # the harness's float64 truth, not the implementation, ran out
            return {"status": "oom", "oom_bytes": limits.requested_bytes(str(exc)),
                    "reason": f"the float64 inputs and reference of this problem do not fit in "
                              f"memory, so no output could be checked: {exc}"[:500]}
        if hidden:  # an implementation ignoring the modifier would pass: nothing to measure
            return {"status": "unsupported", "reason": f"problem refused: {hidden}"}
        with self.steps("prepare"):
            self.prepared = self.adapter.prepare(self.case, inputs)
        return None

    def check(self) -> dict:
        """The checked first call, under the cap from here on: the check's result."""
        import scipy.special  # noqa: F401  (the stop rule's; never loaded under the cap)

        # Compilation is outside the cap: a compiler's own memory (and the processes it
        # starts, which inherit the limit) is not the call's.
        timer = compiled_timer(self.case, self.prepared, self.settings, self.adapter.framework)
        self.cap.enter_context(memory_cap(self.case, self.mem_limit))
        with self.steps("check", timer):
            self.timer, result = checked_timer(self.case, self.prepared, self.settings, timer)
        return result

    def measure(self) -> dict:
        """Warm-up and sampling until the stop rule holds: the timing part of the record."""
        return self.timer.measure().to_record()

    def warm_up(self) -> dict:
        """Warm-up alone, for a caller that samples in blocks: what it learned of the call."""
        self.timer.warm_up()
        return {"per_call_s": self.timer.fastest_call_s, "warmup_calls": self.timer.warmup_calls,
                "timed_s": self.timer.timed_ns / 1e9}

    def take(self, n: int, calls_per_sample: int) -> dict:
        """One block: an untimed call (the side that just got the machine back is not measured
        cold), then `n` samples of `calls_per_sample` calls, and the wall seconds the samples
        took (`spent_s`, what the budget counts: harness.measure.timer.enough)."""
        self.timer.calls_per_sample = calls_per_sample
        self.timer.take(1)
        t0 = time.perf_counter()
        samples = self.timer.take(n)
        return {"samples_s": samples, "spent_s": time.perf_counter() - t0}

    def finish(self) -> dict:
        """The kernel and memory passes, outside the cap: the profiler's and memray's own
        memory (and the modules they load) are not the case's; then `harness_s`."""
        self.cap.close()
        self.timer.release()  # a captured graph's memory is not the memory pass's
        with self.steps("kernel_pass"):
            result = kernel_pass(self.adapter, self.prepared)
        with self.steps("memory_pass"):
            result.update(memory_pass(self.adapter, self.case, self.prepared))
        result["harness_s"] = self.steps.seconds
        return result

    def close(self) -> None:
        self.cap.close()
        prepared, self.prepared, self.timer = self.prepared, None, None
        if prepared is not None:
            prepared.close()


def run_case(case, adapter, settings: TimingSettings, mem_limit: int | None = None) -> dict:
    """Every phase of `CaseRun`, in order: support check, truth, prepare, one checked call,
    timing, then the kernel and memory passes."""
    run = CaseRun(case, adapter, settings, mem_limit)
    try:
        ended = run.start()
        if ended:
            return ended
        result = run.check()
        result.update(run.measure())
        result.update(run.finish())
        return result
    finally:
        run.close()


@contextmanager
def memory_cap(case, mem_limit: int | None):
    """`--mem-limit` for the duration of the block: RLIMIT_DATA on CPU, a memory fraction on CUDA."""
    if mem_limit is None:
        yield
        return
    if case.device.startswith("cuda"):
        def apply(limit):
            limits.cap_cuda(case.device, limit)
    else:
        apply = limits.cap_cpu
    apply(mem_limit)
    try:
        yield
    finally:
        apply(None)


def memory_pass(adapter, case, prepared) -> dict:
    """Peak extra memory of one call, measured in a pass of its own."""
    peak, method, note = measure_peak(prepared, adapter.framework, case.device)
    return {"peak_mem_bytes": peak, "mem_method": f"{method} ({note})" if note else method}


OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory",
               "resourceexhausted", "oom when allocating", "failed to allocate")


def classify_exception(exc: BaseException) -> dict:
    """status, reason (and the size asked for, for an out-of-memory) of a case that raised."""
    text = f"{type(exc).__name__}: {exc}".strip()
    first_line = text.splitlines()[0] if text else type(exc).__name__
    lowered = text.lower()
    if isinstance(exc, MemoryError) or any(m in lowered for m in OOM_MARKERS):
        return {"status": "oom", "reason": first_line[:500], "oom_bytes": limits.requested_bytes(text)}
    return {"status": "error", "reason": first_line[:500]}


def execute(case, adapter, settings: TimingSettings, mem_limit: int | None = None) -> dict:
    """`run_case` with failures turned into statuses; the traceback goes to the worker's log."""
    try:
        return run_case(case, adapter, settings, mem_limit)
    except Exception as exc:  # one case's failure must not end the run
        traceback.print_exc()
        return classify_exception(exc)
