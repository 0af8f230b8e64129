"""Where a kernel case's naive computations (its float64 truth, its tolerance's same-dtype run)
run: on the case's own GPU when that is possible, else with NumPy on the CPU.

On a GPU the reference of a long sequence is seconds (float64 matrix products on the device);
on the host it grows as N² into hours for a sweep to N=16384. It runs there only in a process
that has already imported torch (a torch worker: the harness never brings torch into a JAX or
TensorFlow worker) and sees a GPU; the formula is the same code either way
(harness.problem.reference works on any array namespace). A GPU that cannot hold it falls back
to the CPU, never to a weaker check.
"""
from __future__ import annotations

import sys
from typing import Callable

import numpy as np


def torch_device_for(case) -> str | None:
    """The torch device to compute `case`'s truth on, or None (NumPy on the CPU)."""
    if case.level != "kernel" or not case.device.startswith("cuda"):
        return None
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return case.device


def computed(case, compute: Callable[[dict], tuple], arrays: dict) -> tuple:
    """`compute(arrays)` on the case's GPU where `torch_device_for` gives one (arrays moved
    there, every array of the result brought back as NumPy), else on the NumPy arrays."""
    where = torch_device_for(case)
    if where is None:
        return compute(arrays)
    import torch

    precision = torch.get_float32_matmul_precision()
    # float32 products in full float32, whatever an implementation set (TF32 would widen the
    # same-dtype error a tolerance is built from, and so weaken the check)
    torch.set_float32_matmul_precision("highest")
    try:
        return _on_torch(where, compute, arrays)
    except torch.OutOfMemoryError as exc:
        print(f"the truth of {case.case_id} does not fit on {where} ({exc}); computing it on "
              "the CPU", file=sys.stderr, flush=True)
    finally:
        torch.set_float32_matmul_precision(precision)
        torch.cuda.empty_cache()  # the device's memory is the case's again
    return compute(arrays)


def _on_torch(where: str, compute, arrays: dict):
    """`compute` on `arrays` moved to torch device `where`, its result brought back as NumPy;
    the device's tensors die with this call (so the cache can give their memory back)."""
    import torch

    moved = {name: torch.from_numpy(np.ascontiguousarray(a)).to(where)
             for name, a in arrays.items()}
    return _to_numpy(compute(moved))


def _to_numpy(value):
    if isinstance(value, dict):
        return {name: _to_numpy(v) for name, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_to_numpy(v) for v in value)
    if value is None or isinstance(value, np.ndarray):
        return value
    return value.cpu().numpy()
