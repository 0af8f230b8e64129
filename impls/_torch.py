"""Torch plumbing shared by the torch-family adapters, so each adapter module says only its call.

Moving inputs to a device in a dtype and layout, the causal bias, device checks, and the
`Prepared` conversions (float64, reference layout) are the same for every torch adapter.
"""
from __future__ import annotations

import numpy as np

from harness.inputs import causal_keep
from impls.base import Adapter, Prepared

ALL_DTYPES = ("float64", "float32", "bfloat16", "float16")
TO_BNHD = (0, 2, 1, 3)  # (B, H, N, D) <-> (B, N, H, D); the permutation is its own inverse


def _no_op() -> None:
    return None


def device_reasons(case) -> list[str]:
    """Why torch cannot reach the case's device in this process (empty when it can)."""
    import torch

    if not case.device.startswith("cuda"):
        return []
    if not torch.cuda.is_available():
        return [f"CUDA is not available to torch {torch.__version__} here "
                f"(a CPU-only build, or no GPU visible)"]
    index = int(case.device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        return [f"{case.device} does not exist: torch sees {torch.cuda.device_count()} CUDA device(s)"]
    return []


def to_device(case, inputs, layout=None) -> list:
    """q, k, v as contiguous tensors of the case's dtype on its device, optionally permuted."""
    import torch

    dtype = getattr(torch, case.dtype)
    tensors = []
    for name in ("q", "k", "v"):
        t = torch.from_numpy(inputs[name])
        if layout is not None:
            t = t.permute(*layout)
        tensors.append(t.to(device=case.device, dtype=dtype).contiguous())
    return tensors


def causal_bias(case):
    """Additive (Nq, Nk) mask: 0 where a query sees a key, -inf above the diagonal."""
    import torch

    keep = causal_keep(case.seq_len, case.seq_len_kv)
    bias = torch.from_numpy(np.where(keep, 0.0, -np.inf))
    return bias.to(device=case.device, dtype=getattr(torch, case.dtype))


def prepared(case, call, *, layout=None, close=_no_op, kernel=None) -> Prepared:
    """Wrap `call` with torch's conversions; `layout` is the output's permutation from (B,H,N,D)."""
    import torch

    def to_numpy(out):
        t = out.detach()
        if layout is not None:
            t = t.permute(*layout)
        return t.to(device="cpu", dtype=torch.float64).numpy()  # exact for every dtype

    def sync():
        torch.cuda.synchronize(case.device)

    return Prepared(
        call=call,
        to_numpy=to_numpy,
        out_dtype=lambda out: str(out.dtype).removeprefix("torch."),
        sync=sync if case.device.startswith("cuda") else _no_op,
        close=close,
        kernel=kernel,
    )


class TorchAdapter(Adapter):
    """Declarations common to torch adapters; the library is asked whether the device exists."""

    framework = "torch"
    devices = ("cpu", "cuda")
    dtypes = ALL_DTYPES
    requires = ("torch",)
    install_hint = "pip install torch"

    def library_reasons(self, case) -> list[str]:
        return device_reasons(case)
