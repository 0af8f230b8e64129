"""Run one case in the current process: check support, prepare, check the output, time it.

This is what a worker does for each case; tests call it directly. `execute` turns an
exception into the case's status (`oom` or `error`) so one failure never costs the run.
"""
from __future__ import annotations

import traceback
from collections import OrderedDict
from contextlib import contextmanager

import numpy as np

from harness import kernels, limits, reference
from harness.inputs import kernel_inputs
from harness.timing import TimingSettings, measure

_PROBLEMS: OrderedDict = OrderedDict()  # problem_key -> (inputs, reference); a small LRU
_TOLERANCES: dict = {}
_CACHE_SIZE = 2


def problem(case) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Inputs and float64 reference output for the case's problem, cached across impls/dtypes."""
    key = case.problem_key
    if key in _PROBLEMS:
        _PROBLEMS.move_to_end(key)
        return _PROBLEMS[key]
    inputs = kernel_inputs(case)
    ref = reference.reference_output(inputs["q"], inputs["k"], inputs["v"], case.causal)
    _PROBLEMS[key] = (inputs, ref)
    while len(_PROBLEMS) > _CACHE_SIZE:
        _PROBLEMS.popitem(last=False)
    return inputs, ref


def tolerance_for(case, inputs, ref) -> float:
    key = (case.problem_key, case.dtype)
    if key not in _TOLERANCES:
        _TOLERANCES[key] = reference.tolerance(inputs["q"], inputs["k"], inputs["v"],
                                               case.causal, case.dtype, ref)
    return _TOLERANCES[key]


def check_output(case, prepared, out, ref: np.ndarray, tol: float) -> dict:
    """Compare one output with the reference; the result says ok or why not."""
    result = {"out_dtype": prepared.out_dtype(out), "tolerance": tol}
    arr = prepared.to_numpy(out)
    if arr.shape != ref.shape:
        return {**result, "status": "mismatch",
                "reason": f"output shape {tuple(arr.shape)}, expected {tuple(ref.shape)}"}
    errors = reference.compare(arr, ref)
    result.update(max_abs_err=errors["max_abs_err"], rel_err=errors["rel_err"])
    if not errors["finite"]:
        return {**result, "status": "mismatch", "reason": "output contains NaN or Inf"}
    if result["out_dtype"] != case.dtype:
        return {**result, "status": "mismatch",
                "reason": f"output dtype {result['out_dtype']}, expected {case.dtype}"}
    if errors["max_abs_err"] > tol:
        return {**result, "status": "mismatch",
                "reason": f"max_abs_err {errors['max_abs_err']:.3g} > tolerance {tol:.3g}"}
    return {**result, "status": "ok", "reason": ""}


def run_case(case, adapter, settings: TimingSettings, mem_limit: int | None = None) -> dict:
    """Support check, prepare, one checked call, timing, then the kernel and memory passes.

    Exceptions propagate (see `execute`). With `mem_limit`, what the checked and timed calls
    allocate beyond what the worker holds after `prepare` is capped. Shared libraries are
    loaded before the cap: loading one under a tight RLIMIT_DATA can hang (OpenBLAS sizing
    its buffers), and that is not the case's cost.
    """
    reasons = adapter.unsupported(case)
    if reasons:
        return {"status": "unsupported", "reason": "; ".join(reasons)}
    inputs, ref = problem(case)
    tol = tolerance_for(case, inputs, ref)
    prepared = adapter.prepare(case, inputs)
    try:
        import scipy.stats  # noqa: F401  (see below: never loaded under the cap)

        with memory_cap(case, mem_limit):
            out = prepared.call()
            prepared.sync()
            result = check_output(case, prepared, out, ref, tol)
            del out
            result.update(measure(prepared.call, prepared.sync, settings))
        # Instrumentation passes, outside the cap: the profiler's and memray's own memory
        # (and the modules they load) are not the case's.
        result.update(kernel_pass(adapter, prepared))
        result.update(memory_pass(adapter, case, prepared))
    finally:
        prepared.close()
    return result


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


def kernel_pass(adapter, prepared) -> dict:
    """For adapters that dispatch (torch SDPA): the kernel that really ran; a pinned backend
    that did not run is an error, not a measurement of that backend."""
    if not getattr(adapter, "reports_kernel", False):
        return {"kernel": prepared.kernel}
    ran = kernels.torch_sdpa_kernel(prepared) or "unknown"
    if prepared.kernel and ran != prepared.kernel:
        return {"kernel": ran, "status": "error",
                "reason": f"pinned {prepared.kernel}, but the profiler saw {ran} run"}
    return {"kernel": ran}


def memory_pass(adapter, case, prepared) -> dict:
    """Peak extra memory of one call, measured in a pass of its own."""
    from harness.memory import measure_peak

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
