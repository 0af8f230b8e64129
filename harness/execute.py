"""Run one case in the current process: check support, prepare, check the output, time it.

This is what a worker does for each case; tests call it directly. `execute` turns an
exception into the case's status (`oom` or `error`) so one failure never costs the run.
"""
from __future__ import annotations

import traceback
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from harness import gradients, kernels, layers, limits, reference
from harness.inputs import grad_output, kernel_inputs, key_valid_lengths
from harness.timing import TimingSettings, measure

_PROBLEMS: OrderedDict = OrderedDict()  # problem_key -> _Problem; a small LRU
_TOLERANCES: dict = {}
_CACHE_SIZE = 2


@dataclass
class _Problem:
    """One problem's float64 inputs (and weights), reference output and, once a fwd_bwd case
    asked, dL/d(out) (in inputs["dout"]) and the reference gradients."""

    inputs: dict
    ref: np.ndarray
    grads: dict | None = None


def _reference(case, inputs, dtype: str, backward: bool):
    """(output, gradients or None) of the case's problem computed naively in `dtype`."""
    if case.level in layers.LAYER_LEVELS:
        return layers.forward_backward(case, inputs, dtype, backward)
    if backward:
        return gradients.kernel_forward_backward(case, inputs, dtype)
    valid = key_valid_lengths(case)
    return reference.naive_attention(inputs["q"], inputs["k"], inputs["v"], case.causal, dtype,
                                     valid), None


def _problem(case) -> _Problem:
    key = case.problem_key
    if key in _PROBLEMS:
        _PROBLEMS.move_to_end(key)
        entry = _PROBLEMS[key]
    else:
        is_layer = case.level in layers.LAYER_LEVELS
        inputs = layers.layer_inputs(case) if is_layer else kernel_inputs(case)
        entry = _Problem(inputs, _reference(case, inputs, "float64", False)[0])
        _PROBLEMS[key] = entry
        while len(_PROBLEMS) > _CACHE_SIZE:
            _PROBLEMS.popitem(last=False)
    if case.mode == "fwd_bwd" and entry.grads is None:
        entry.inputs["dout"] = grad_output(case, entry.ref.shape)
        entry.grads = _reference(case, entry.inputs, "float64", True)[1]
    return entry


def problem(case) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Inputs and float64 reference output for the case's problem, cached across impls/dtypes.

    Kernels: q, k, v. Layers (mha, encoder): x and the weights (harness.layers). For a fwd_bwd
    case the inputs also hold "dout", dL/d(out) of the loss sum(out · G) every framework uses.
    """
    entry = _problem(case)
    return entry.inputs, entry.ref


def reference_grads(case) -> dict[str, np.ndarray]:
    """Float64 gradients of the loss for a fwd_bwd case: q, k, v, or x and every weight."""
    return _problem(case).grads


def _tolerances(case) -> dict:
    """{"out": float, "grads": {name: float} or None} for the case's problem and dtype.

    Both follow one policy: a multiple of what the naive computation in the case's dtype gets
    wrong on the same inputs, floored (reference.bound; a gradient's floor scales with its
    magnitude). Gradients that pass through a ReLU (the encoder's) are bounded in norm instead
    (reference.norm_bound: why, there). fwd_bwd cases run the naive forward and backward once
    for both.
    """
    backward = case.mode == "fwd_bwd"
    key = (case.problem_key, case.dtype, backward)
    if key in _TOLERANCES:
        return _TOLERANCES[key]
    entry = _problem(case)
    if case.level == "kernel" and not backward:  # the original kernel path, unchanged
        inputs = entry.inputs
        out_tol = reference.tolerance(inputs["q"], inputs["k"], inputs["v"], case.causal,
                                      case.dtype, entry.ref, key_valid_lengths(case))
        tols = {"out": out_tol, "grads": None}
    else:
        if case.dtype == "float64":  # no naive run needed: fixed (scaled) floors
            out, grads = entry.ref, entry.grads
        else:
            out, grads = _reference(case, entry.inputs, case.dtype, backward)
        grad_bound = reference.norm_bound if layers.through_relu(case) else (
            lambda naive, ref, dtype: reference.bound(naive, ref, dtype, scaled=True))
        tols = {"out": reference.bound(out, entry.ref, case.dtype),
                "grads": {n: grad_bound(grads[n], g, case.dtype)
                          for n, g in entry.grads.items()} if backward else None}
    _TOLERANCES[key] = tols
    return tols


def tolerance_for(case, inputs=None, ref=None) -> float:
    """Tolerance on the output's max_abs_err (`inputs` and `ref` are accepted for old callers;
    the cached problem of `case` is what is used)."""
    return _tolerances(case)["out"]


def grad_tolerances_for(case) -> dict[str, float]:
    return _tolerances(case)["grads"]


def check_output(case, prepared, out, ref: np.ndarray, tol: float) -> dict:
    """Compare one call's result with the reference; the result says ok or why not.

    For a fwd_bwd case the call returns (output, gradients): both are checked, the gradients
    against `reference_grads(case)` with their own tolerances.
    """
    grads = None
    if case.mode == "fwd_bwd":
        out, grads = out
    result = _check_tensor(case, prepared, out, ref, tol)
    if grads is not None:
        checked = check_grads(case, prepared, grads)
        if result["status"] == "ok" and checked["status"] != "ok":
            result.update(status=checked["status"], reason=checked["reason"])
        result.update(grad_errors=checked["grad_errors"], grad_err_ratio=checked["grad_err_ratio"])
    return result


def _check_tensor(case, prepared, out, ref: np.ndarray, tol: float) -> dict:
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


def check_grads(case, prepared, grads: dict) -> dict:
    """Every reference gradient present, of the case's dtype and shape, finite, within its
    tolerance. `grads` is the call's own dict (framework tensors, keyed as the adapter likes);
    `prepared.grads_to_numpy` names them as the reference does. `grad_errors` holds each
    gradient's errors and which one its tolerance bounds ("on": max_abs_err, or norm_err for
    gradients through a ReLU, see reference.norm_bound); `grad_err_ratio` is the worst
    error / tolerance (above 1: mismatch).
    """
    expected, tols = reference_grads(case), grad_tolerances_for(case)
    judged = "norm_err" if layers.through_relu(case) else "max_abs_err"
    out = {"grad_errors": {}, "grad_err_ratio": None, "status": "ok", "reason": ""}
    problems = [f"gradient {name} dtype {dtype}, expected {case.dtype}"
                for name, dtype in ((n, prepared.out_dtype(g)) for n, g in grads.items())
                if dtype != case.dtype]
    arrays = prepared.grads_to_numpy(grads)
    missing = [n for n in expected if n not in arrays]
    if missing:
        problems.append(f"no gradient for {', '.join(missing)}")
    extra = sorted(set(arrays) - set(expected))
    if extra:
        problems.append(f"unexpected gradients {', '.join(extra)}")
    worst = 0.0
    for name in [n for n in expected if n in arrays]:
        ref, tol, arr = expected[name], tols[name], arrays[name]
        if arr.shape != ref.shape:
            problems.append(f"gradient {name} shape {tuple(arr.shape)}, "
                            f"expected {tuple(ref.shape)}")
            continue
        errors = reference.compare(arr, ref)
        out["grad_errors"][name] = {"max_abs_err": errors["max_abs_err"],
                                    "rel_err": errors["rel_err"], "norm_err": errors["norm_err"],
                                    "tolerance": tol, "on": judged}
        worst = max(worst, errors[judged] / tol)
        if not errors["finite"]:
            problems.append(f"gradient {name} contains NaN or Inf")
        elif errors[judged] > tol:
            problems.append(f"gradient {name}: {judged} {errors[judged]:.3g} > "
                            f"tolerance {tol:.3g}")
    out["grad_err_ratio"] = worst if out["grad_errors"] else None
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        out.update(status="mismatch", reason=problems[0] + more)
    return out


def run_case(case, adapter, settings: TimingSettings, mem_limit: int | None = None) -> dict:
    """Support check, prepare, one checked call, timing, then the kernel and memory passes.

    In mode fwd_bwd the call is forward and backward (see impls.base.Prepared): its output and
    its gradients are checked, and the timing, kernel and memory passes measure both.

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
    detect = getattr(adapter, "kernel_that_ran", None)  # layers: fast path or not, and SDPA's
    ran = (detect(prepared) if detect else kernels.torch_sdpa_kernel(prepared)) or "unknown"
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
