"""The truth every case is judged by: seeded float64 inputs, the float64 reference output (and
gradients), and the tolerance the case's dtype is allowed.

Computed once per problem and shared: within a process by a small LRU, across the worker
processes of one run by a cache directory (`use_cache_dir`), so the TensorFlow worker does not
redo what the torch worker computed. Inputs are regenerated from their seed (cheap); the
reference, its gradients and the tolerances are what is shared. The disk copy is exact (npz,
float64) and only ever replaces a computation with its own earlier result; an unreadable entry
is recomputed.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.problem import gradients, layers, on_device, reference
from harness.problem.inputs import grad_output, kernel_inputs, real_query_rows

_PROBLEMS: OrderedDict = OrderedDict()  # problem_key -> _Problem; a small LRU
_TOLERANCES: dict = {}
_CACHE_SIZE = 2
_CACHE_DIR: Path | None = None
CACHE_LIMIT_BYTES = 4 * 2**30  # a GPU sweep's float64 references can be gigabytes each


def use_cache_dir(path: str | Path | None) -> None:
    """Share problems and tolerances with the run's other workers through `path` (None: off)."""
    global _CACHE_DIR
    _CACHE_DIR = Path(path) if path else None
    if _CACHE_DIR:
        _CACHE_DIR.mkdir(parents=True, exist_ok=True)


def clear_caches() -> None:
    """Forget what this process computed (the disk cache stays): as a fresh worker starts."""
    _PROBLEMS.clear()
    _TOLERANCES.clear()


def _digest(key) -> str:
    return hashlib.sha256(repr(key).encode()).hexdigest()[:24]


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load_arrays(kind: str, key) -> dict | None:
    if _CACHE_DIR is None:
        return None
    path = _CACHE_DIR / f"{kind}-{_digest(key)}.npz"
    try:
        with np.load(path) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError):
        return None  # absent, or being written by another worker: compute it


def _save_arrays(kind: str, key, arrays: dict) -> None:
    """Shared unless the cache would outgrow CACHE_LIMIT_BYTES (then the others recompute)."""
    if _CACHE_DIR is None:
        return
    size = sum(a.nbytes for a in arrays.values())
    held = sum(f.stat().st_size for f in _CACHE_DIR.glob("*.npz"))
    if held + size > CACHE_LIMIT_BYTES:
        return

    def write(tmp):
        with open(tmp, "wb") as fh:  # a file object: np.savez would append .npz to a name
            np.savez(fh, **arrays)

    _atomic_write(_CACHE_DIR / f"{kind}-{_digest(key)}.npz", write)


@dataclass
class _Problem:
    """One problem's float64 inputs (and weights), reference output and, once a fwd_bwd case
    asked, dL/d(out) (in inputs["dout"]) and the reference gradients."""

    inputs: dict
    ref: np.ndarray
    grads: dict | None = None


def _reference(case, inputs, dtype: str, backward: bool):
    """(output, gradients or None) of the case's problem computed naively in `dtype`; a kernel
    case's on its own GPU where it can be (harness.problem.on_device)."""
    if case.level in layers.LAYER_LEVELS:
        return layers.forward_backward(case, inputs, dtype, backward)

    def kernel(a: dict):
        if backward:
            return gradients.kernel_forward_backward(case, a, dtype)
        return reference.kernel_attention(case, a, dtype), None

    return on_device.computed(case, kernel, kernel_arrays(inputs, backward))


def kernel_arrays(inputs: dict, backward: bool = False) -> dict:
    """The arrays a kernel case's naive computation reads: q, k, v, the bias where there is
    one, and dL/d(out) for a backward (what goes to the device, harness.problem.on_device)."""
    names = ("q", "k", "v", "bias", "dout") if backward else ("q", "k", "v", "bias")
    return {n: inputs[n] for n in names if n in inputs}


def _with_prefix(arrays: dict, prefix: str) -> dict:
    return {n[len(prefix):]: a for n, a in arrays.items() if n.startswith(prefix)}


def _computed(case) -> _Problem:
    """Inputs (regenerated from the seed: cheap) and the reference (and gradients, for
    fwd_bwd) from the disk cache, or computed (expensive) and put there."""
    key, backward = case.problem_key, case.mode == "fwd_bwd"
    inputs = layers.layer_inputs(case) if case.level in layers.LAYER_LEVELS else kernel_inputs(case)
    cached = _load_arrays("problem", key)
    if cached is not None and "ref" in cached and (not backward or len(cached) > 1):
        entry = _Problem(inputs, cached["ref"], _with_prefix(cached, "grad:") or None)
        if entry.grads is not None:
            inputs["dout"] = grad_output(case, entry.ref.shape)
        return entry
    if backward:  # one float64 forward and backward, the forward's output being the reference
        inputs["dout"] = grad_output(case, _output_shape(case, inputs))
        entry = _Problem(inputs, *_reference(case, inputs, "float64", True))
    else:
        entry = _Problem(inputs, _reference(case, inputs, "float64", False)[0])
    _save_arrays("problem", key, {"ref": entry.ref,
                                  **{f"grad:{n}": g for n, g in (entry.grads or {}).items()}})
    return entry


def _output_shape(case, inputs) -> tuple:
    """The shape of the case's output: a layer's is its input's; a kernel's (B, H, Nq, Dv)."""
    if case.level in layers.LAYER_LEVELS:
        return tuple(inputs["x"].shape)
    return tuple(inputs["q"].shape[:-1]) + tuple(inputs["v"].shape[-1:])


def _problem(case) -> _Problem:
    key = case.problem_key
    if key in _PROBLEMS:
        _PROBLEMS.move_to_end(key)
        entry = _PROBLEMS[key]
        if case.mode == "fwd_bwd" and entry.grads is None:
            entry = _computed(case)
    else:
        entry = _computed(case)
    _PROBLEMS[key] = entry
    while len(_PROBLEMS) > _CACHE_SIZE:
        _PROBLEMS.popitem(last=False)
    return entry


def problem(case) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Inputs and float64 reference output for the case's problem, cached across impls/dtypes.

    Kernels: q, k, v. Layers (mha, encoder): x and the weights (harness.problem.layers). For a fwd_bwd
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
    path = _CACHE_DIR / f"tolerance-{_digest(key)}.json" if _CACHE_DIR else None
    if path is not None and path.exists():
        try:
            _TOLERANCES[key] = json.loads(path.read_text())
            return _TOLERANCES[key]
        except (OSError, ValueError):
            pass  # being written or damaged: compute it
    entry = _problem(case)
    if case.dtype == "float64":  # no naive run needed: fixed (scaled) floors
        out, grads = entry.ref, entry.grads
    else:
        out, grads = _reference(case, entry.inputs, case.dtype, backward)
    grad_bound = reference.norm_bound if layers.through_relu(case) else (
        lambda naive, ref, dtype: reference.bound(naive, ref, dtype, scaled=True))
    real = real_rows(case)  # a ragged batch's padded query rows are not checked
    tols = {"out": reference.bound(real(out, "out"), real(entry.ref, "out"), case.dtype),
            "grads": {n: grad_bound(real(grads[n], n), real(g, n), case.dtype)
                      for n, g in entry.grads.items()} if backward else None}
    _TOLERANCES[key] = tols
    if path is not None:
        _atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(tols)))
    return tols


def real_rows(case):
    """A function (array, name) -> the array with the padded query rows of a ragged square
    kernel batch set to 0, for the output ("out") and dQ ("q"), whose rows follow the queries;
    the array itself otherwise. Those rows' output is undefined: no check looks at them."""
    rows = real_query_rows(case) if case.level == "kernel" else None

    def real(array, name: str):
        if rows is None or name not in ("out", "q"):
            return array
        return np.where(rows, array, 0.0)

    return real


def tolerance_for(case) -> float:
    """Tolerance on the output's max_abs_err."""
    return _tolerances(case)["out"]


def grad_tolerances_for(case) -> dict[str, float]:
    return _tolerances(case)["grads"]


