"""Torch plumbing shared by the torch-family adapters, so each adapter module says only its call.

Moving inputs to a device in a dtype and layout, the causal bias, device checks, and the
`Prepared` conversions (float64, reference layout) are the same for every torch adapter.
"""
from __future__ import annotations

import numpy as np

from harness.constants import DTYPES
from harness.problem.inputs import causal_keep
from impls.base import Adapter, Prepared, no_op


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


def tensor(case, array, layout=None, grad: bool = False):
    """One float64 array as a contiguous tensor of the case's dtype on its device, optionally
    permuted; a leaf that requires grad when `grad`."""
    import torch

    t = torch.from_numpy(array)
    if layout is not None:
        t = t.permute(*layout)
    t = t.to(device=case.device, dtype=getattr(torch, case.dtype)).contiguous()
    return t.requires_grad_(True) if grad else t


def to_device(case, inputs, layout=None) -> list:
    """q, k, v as contiguous tensors of the case's dtype on its device, optionally permuted;
    in mode fwd_bwd, leaves that require grad (see `prepared`'s `wrt`)."""
    grad = case.mode == "fwd_bwd"
    return [tensor(case, inputs[name], layout, grad) for name in ("q", "k", "v")]


def with_backward(forward, wrt: dict, dout):
    """forward + backward of sum(out · dout), as one call returning (out, {name: grad}).

    `torch.autograd.grad` returns fresh gradients each call (nothing accumulates in .grad, so
    nothing needs zeroing) and builds the graph anew: every call is a whole training step's
    forward and backward for this operation. A tensor the output does not depend on gets a
    zero gradient (not an exception), so a computation cut off from autograd is a mismatch.
    """
    import torch

    names, tensors = list(wrt), tuple(wrt.values())

    def call():
        out = forward()
        grads = torch.autograd.grad(out, tensors, dout, allow_unused=True,
                                    materialize_grads=True)
        return out, dict(zip(names, grads))

    return call


def causal_bias(case):
    """Additive (Nq, Nk) mask: 0 where a query sees a key, -inf above the diagonal."""
    import torch

    keep = causal_keep(case.seq_len, case.seq_len_kv)
    bias = torch.from_numpy(np.where(keep, 0.0, -np.inf))
    return bias.to(device=case.device, dtype=getattr(torch, case.dtype))


def naive_attention(q, k, v, mask, scale: float):
    """softmax(q·kᵀ·scale + mask)·v written out as a textbook does: matmul, scale, additive
    mask (or None), softmax, matmul; no fused kernel."""
    import torch

    scores = torch.matmul(q, k.transpose(-2, -1)) * scale
    if mask is not None:
        scores = scores + mask
    return torch.matmul(torch.softmax(scores, dim=-1), v)


def prepared(case, call, *, layout=None, close=no_op, kernel=None, wrt=None,
             inputs=None, grads_to_numpy=None) -> Prepared:
    """Wrap `call` with torch's conversions; `layout` is the output's permutation from (B,H,N,D).

    Mode fwd_bwd: `wrt` names the leaves to differentiate ({"q": q, ...}, in the output's
    layout) and `inputs["dout"]` is dL/d(out); the call becomes `with_backward`'s.
    """
    import torch

    if case.mode == "fwd_bwd":
        if wrt is None or inputs is None:
            raise ValueError("mode fwd_bwd needs wrt and inputs (with dout)")
        call = with_backward(call, wrt, tensor(case, inputs["dout"], layout))

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
        sync=sync if case.device.startswith("cuda") else no_op,
        close=close,
        kernel=kernel,
        grads_to_numpy=grads_to_numpy,
    )


class TorchAdapter(Adapter):
    """Declarations common to torch adapters; the library is asked whether the device exists."""

    framework = "torch"
    devices = ("cpu", "cuda")
    dtypes = DTYPES
    requires = ("torch",)
    install_hint = "pip install torch"

    def library_reasons(self, case) -> list[str]:
        return device_reasons(case)
