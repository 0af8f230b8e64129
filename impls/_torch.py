"""Torch plumbing shared by the torch-family adapters, so each adapter module says only its call.

Moving inputs to a device in a dtype and layout, the causal bias, grouped K/V heads, SDPA's
mask and head options, device checks, and the `Prepared` conversions (float64, reference
layout) are the same for every torch adapter.
"""
from __future__ import annotations

import numpy as np

from harness.case import BOTTOM_RIGHT
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
    """Additive (Nq, Nk) mask: 0 where a query sees a key, -inf where it does not (the
    diagonal aligned as the case says: top-left or bottom-right)."""
    import torch

    keep = causal_keep(case.seq_len, case.seq_len_kv, case.causal_align)
    bias = torch.from_numpy(np.where(keep, 0.0, -np.inf))
    return bias.to(device=case.device, dtype=getattr(torch, case.dtype))


def repeat_kv(x, group: int):
    """Hugging Face's `repeat_kv`: (B, Hkv, N, D) -> (B, Hkv·group, N, D), each K/V head
    repeated for the `group` query heads that read it (query head h reads K/V head h // group).
    Eager model code runs it in every forward, so the naive adapters call it inside the timed
    call (autograd sums the gradients of the copies back onto the Hkv heads)."""
    if group == 1:
        return x
    b, kv_heads, n, d = x.shape
    return x[:, :, None, :, :].expand(b, kv_heads, group, n, d).reshape(b, kv_heads * group, n, d)


def naive_attention(q, k, v, mask, scale: float, group: int = 1):
    """softmax(q·kᵀ·scale + mask)·v written out as a textbook does: K/V heads repeated for
    their query groups (`repeat_kv`), matmul, scale, additive mask (or None), softmax, matmul;
    no fused kernel."""
    import torch

    k, v = repeat_kv(k, group), repeat_kv(v, group)
    scores = torch.matmul(q, k.transpose(-2, -1)) * scale
    if mask is not None:
        scores = scores + mask
    return torch.matmul(torch.softmax(scores, dim=-1), v)


def sdpa_options(case, q, k, v) -> dict:
    """`scaled_dot_product_attention`'s keyword arguments for the case's heads and mask, built
    in `prepare` (inside any pinned-backend context: the choice below asks torch what the pin
    allows).

    Grouped K/V heads: `enable_gqa=True` (query head h reads K/V head h // group, as the
    reference). Causal top-left: `is_causal=True`, SDPA's own alignment. Causal bottom-right:
    torch's `causal_lower_right` bias where torch runs it as a fused causal kernel (the flash or
    memory-efficient backends, on CUDA); anywhere else torch would materialise that bias as a
    boolean (Nq, Nk) mask inside every call, so the same mask is built here, once, and passed
    as `attn_mask`. A mask decides the backend: on the CPU the flash backend takes it; on CUDA
    flash takes none, so the dispatcher runs memory-efficient, cuDNN or math (the record's
    `kernel` says which), and a pinned backend that cannot is refused by its trial call.
    """
    import torch

    options = {}
    if case.kv_heads != case.heads:
        options["enable_gqa"] = True
    if case.causal_align == BOTTOM_RIGHT:
        from torch.backends.cuda import (SDPAParams, can_use_efficient_attention,
                                         can_use_flash_attention)
        from torch.nn.attention.bias import causal_lower_right

        params = SDPAParams(q, k, v, None, 0.0, False, options.get("enable_gqa", False))
        if can_use_flash_attention(params) or can_use_efficient_attention(params):
            options["attn_mask"] = causal_lower_right(case.seq_len, case.seq_len_kv)
        else:
            keep = causal_keep(case.seq_len, case.seq_len_kv, case.causal_align)
            options["attn_mask"] = torch.from_numpy(keep).to(q.device)
    elif case.causal:
        options["is_causal"] = True
    return options


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
