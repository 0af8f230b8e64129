"""Is an output right? One call's result (and gradients) against the float64 truth.

The padded query rows of a ragged square batch (harness.problem.inputs.query_valid_lengths)
are left out of the output's comparison and dQ's: their output is undefined (a packed
implementation has no such rows at all), and their upstream gradient is 0.
"""
from __future__ import annotations

import numpy as np

from harness.problem import layers, reference
from harness.problem.truth import grad_tolerances_for, real_rows, reference_grads


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
    real = real_rows(case)
    errors = reference.compare(real(arr, "out"), real(ref, "out"))
    result.update(max_abs_err=errors["max_abs_err"], rel_err=errors["rel_err"],
                  output_finite=bool(errors["finite"]))
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
    worst, real = 0.0, real_rows(case)
    for name in [n for n in expected if n in arrays]:
        ref, tol, arr = expected[name], tols[name], arrays[name]
        if arr.shape != ref.shape:
            problems.append(f"gradient {name} shape {tuple(arr.shape)}, "
                            f"expected {tuple(ref.shape)}")
            continue
        errors = reference.compare(real(arr, name), real(ref, name))
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


