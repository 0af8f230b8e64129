"""Can a check tell an implementation that ignores a modifier? Only if the modifier moves the
output by clearly more than the tolerance the case is judged with.

`unobservable` switches each non-default modifier of a kernel case off in turn (window -> 0,
alibi -> False, bias -> none, softcap -> 0), computes the float64 reference on the same q, k,
v, and compares it with the modified one on the rows a check looks at (a ragged batch's real
query rows). Unless the largest difference exceeds OBSERVABLE_MARGIN times the case's tolerance
(the one its dtype gets, harness.problem.truth.tolerance_for), an implementation that ignored
the modifier would pass: the case says so, and the run can refuse it (DESIGN: modifiers must be
observable). The line says why: the modifier is weak on these inputs (it would stay hidden
under the dtype's smallest tolerance, its floor), or the dtype's round-off is as large (a
low-precision tolerance built from the naive computation's error; soft-capping at 30 or more
in bfloat16 is the usual case: scores near the cap carry bfloat16's ulp of 0.125..0.25). A
ragged batch needs no such check: padded keys hold random numbers, so ignoring the lengths
moves a real query's output by O(1) wherever it could reach them (a causal prefill's real
queries never reach their own padding: there the lengths change nothing a check looks at, and
ignoring them costs only time).

Cost: one float64 forward per modifier on top of the truth, which it reuses (on the case's GPU
where the truth runs there, harness.problem.on_device).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from harness.problem import on_device, reference, truth
from harness.problem.modifiers import score_mods

# The difference a switched-off modifier must make, in units of the case's tolerance: well
# above it, so that an implementation ignoring the modifier fails whatever its own round-off.
OBSERVABLE_MARGIN = 10.0

# modifier -> (its value in words, what switches it off, why it can be too weak to see)
MODIFIERS = {
    "window": (lambda c: f"window {c.window}", {"window": 0},
               "the keys it drops carry too little attention weight"),
    "alibi": (lambda c: "alibi", {"alibi": None},
              "its slopes are too small at these distances"),
    "bias": (lambda c: f"bias {c.bias}", {"bias": None},
             "the bias is too small against the scores"),
    "softcap": (lambda c: f"softcap {c.softcap:g}", {"softcap": 0.0},
                "the scores are too small for the cap to act"),
}


def modifier_effects(case, inputs: dict | None = None) -> dict[str, float]:
    """{modifier: max |reference − reference without it|} over the checked rows, for each
    modifier the case has on (harness.problem.modifiers); `inputs` default to the case's own
    (the truth's, cached)."""
    if inputs is None:
        inputs, ref = truth.problem(case)
    else:
        ref = _reference(case, inputs)
    return _effects(case, inputs, ref)


def _effects(case, inputs: dict, ref: np.ndarray) -> dict[str, float]:
    on = [name for name in MODIFIERS if not case.at_default(name)]
    if case.level != "kernel":
        return {}
    real, mods = truth.real_rows(case), score_mods(case, inputs)
    effects = {}
    for name in on:
        without = _reference(case, inputs, dataclasses.replace(mods, **MODIFIERS[name][1]))
        effects[name] = float(np.max(np.abs(real(ref, "out") - real(without, "out")),
                                     initial=0.0))
    return effects


def unobservable(case, inputs: dict | None = None) -> str | None:
    """One line naming each modifier the case's check cannot see and why, or None when every
    modifier moves the output by more than OBSERVABLE_MARGIN x the case's tolerance (and for
    a case without modifiers). `inputs`: other q, k, v (and bias) to judge instead of the
    case's own; the tolerance is then the one those inputs give (the same policy,
    harness.problem.reference.bound)."""
    if case.level != "kernel" or all(case.at_default(name) for name in MODIFIERS):
        return None
    if inputs is None:
        inputs, ref = truth.problem(case)
        tol = truth.tolerance_for(case)
    else:
        ref = _reference(case, inputs)
        tol = _tolerance(case, inputs, ref)
    weak = []
    for name, effect in _effects(case, inputs, ref).items():
        if effect > OBSERVABLE_MARGIN * tol:
            continue
        what, _, why = MODIFIERS[name]
        if effect > OBSERVABLE_MARGIN * reference.ABS_FLOOR[case.dtype]:
            # not weak in itself: the dtype's own round-off on these inputs hides it
            why = (f"{case.dtype} round-off on these scores is as large (a naive {case.dtype} "
                   f"computation errs by {tol / reference.TOLERANCE_FACTOR:.2g})")
        weak.append(f"{what(case)} changes this problem's output by at most {effect:.2g}, under "
                    f"{OBSERVABLE_MARGIN:g}x its tolerance {tol:.2g}: {why}")
    return "; ".join(weak) or None


def _reference(case, inputs: dict, mods=None) -> np.ndarray:
    """The float64 forward of the case on `inputs`, with `mods` (default: the case's)."""
    return on_device.computed(case, lambda a: (reference.kernel_attention(case, a, "float64",
                                                                          _moved(mods, a)), None),
                              truth.kernel_arrays(inputs))[0]


def _moved(mods, arrays: dict):
    """`mods` with its bias the one in `arrays` (moved where the computation runs)."""
    if mods is None or mods.bias is None:
        return mods
    return dataclasses.replace(mods, bias=arrays["bias"])


def _tolerance(case, inputs: dict, ref: np.ndarray) -> float:
    """The output tolerance the case's dtype gets on `inputs` (truth.tolerance_for's policy)."""
    if case.dtype == "float64":
        return reference.ABS_FLOOR["float64"]
    naive = on_device.computed(case, lambda a: (reference.kernel_attention(case, a, case.dtype),
                                                None), truth.kernel_arrays(inputs))[0]
    real = truth.real_rows(case)
    return reference.bound(real(naive, "out"), real(ref, "out"), case.dtype)
