"""Torch plumbing shared by the torch-family adapters, so each adapter module says only its call.

Moving inputs to a device in a dtype and layout, the dense additive mask (masks, ALiBi, bias)
and the soft cap, grouped K/V heads, SDPA's mask and head options, device checks, and the
`Prepared` conversions (float64, reference layout) are the same for every torch adapter.
"""
from __future__ import annotations

import numpy as np

from harness.case import BOTTOM_RIGHT
from harness.constants import DTYPES
from impls._masks import (additive, describe, has_score_terms, is_ragged, keep_mask,
                          masks_scores, parts)
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


def dense_mask(case, inputs):
    """The additive mask of the case's dtype on its device, broadcastable to (B, H, Nq, Nk):
    ALiBi, the bias, and -inf where a score is not kept (causal of either alignment, window,
    key padding or a ragged batch); None when nothing is added (impls._masks.additive)."""
    import torch

    mask = additive(case, inputs)
    if mask is None:
        return None
    return torch.from_numpy(np.ascontiguousarray(mask)).to(device=case.device,
                                                           dtype=getattr(torch, case.dtype))


def repeat_kv(x, group: int):
    """Hugging Face's `repeat_kv`: (B, Hkv, N, D) -> (B, Hkv·group, N, D), each K/V head
    repeated for the `group` query heads that read it (query head h reads K/V head h // group).
    Eager model code runs it in every forward, so the naive adapters call it inside the timed
    call (autograd sums the gradients of the copies back onto the Hkv heads)."""
    if group == 1:
        return x
    b, kv_heads, n, d = x.shape
    return x[:, :, None, :, :].expand(b, kv_heads, group, n, d).reshape(b, kv_heads * group, n, d)


def naive_attention(q, k, v, mask, scale: float, group: int = 1, softcap: float = 0.0):
    """softmax(cap(q·kᵀ·scale) + mask)·v written out as a textbook does: K/V heads repeated
    for their query groups (`repeat_kv`), matmul, scale, the soft cap softcap·tanh(s/softcap)
    (when `softcap`), additive mask (or None), softmax, matmul; no fused kernel."""
    import torch

    k, v = repeat_kv(k, group), repeat_kv(v, group)
    scores = torch.matmul(q, k.transpose(-2, -1)) * scale
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    if mask is not None:
        scores = scores + mask
    return torch.matmul(torch.softmax(scores, dim=-1), v)


def sdpa_options(case, q, k, v, inputs=None) -> dict:
    """`scaled_dot_product_attention`'s keyword arguments for the case's heads, mask and score
    terms, built in `prepare` (inside any pinned-backend context: the choice below asks torch
    what the pin allows). `inputs` holds the case's bias (needed only with one).

    Grouped K/V heads: `enable_gqa=True` (query head h reads K/V head h // group, as the
    reference). Causal top-left and nothing else: `is_causal=True`, SDPA's own alignment.
    ALiBi or a bias: a float `attn_mask` of the case's dtype, (B or 1, H, Nq, Nk), holding them
    and -inf where a score is not kept (impls._masks.additive), SDPA adding it to the scaled
    scores as the reference does. Key padding, a ragged batch, a window: a boolean `attn_mask`
    (B or 1, 1, Nq, Nk), True where a score is kept. Causal bottom-right alone: torch's
    `causal_lower_right` bias where torch runs it as a fused causal kernel (the flash or
    memory-efficient backends, on CUDA); anywhere else torch would materialise that bias as a
    boolean (Nq, Nk) mask inside every call, so the same mask is built here, once. A mask
    decides the backend (`sdpa_mask_info` says how); a pinned backend that cannot take it is
    refused by its trial call.
    """
    import torch

    options = {}
    if case.kv_heads != case.heads:
        options["enable_gqa"] = True
    if has_score_terms(case):
        if inputs is None:
            raise ValueError("a case with ALiBi or a bias needs its inputs for SDPA's attn_mask")
        options["attn_mask"] = dense_mask(case, inputs)
    elif masks_scores(case):
        if case.causal_align == BOTTOM_RIGHT and not case.window and not is_ragged(case):
            from torch.backends.cuda import (SDPAParams, can_use_efficient_attention,
                                             can_use_flash_attention)
            from torch.nn.attention.bias import causal_lower_right

            params = SDPAParams(q, k, v, None, 0.0, False, options.get("enable_gqa", False))
            if can_use_flash_attention(params) or can_use_efficient_attention(params):
                options["attn_mask"] = causal_lower_right(case.seq_len, case.seq_len_kv)
                return options
        keep = np.ascontiguousarray(keep_mask(case))
        options["attn_mask"] = torch.from_numpy(keep).to(q.device)
    elif case.causal:
        options["is_causal"] = True
    return options


def sdpa_mask_info(case, options: dict, q, k, v) -> dict:
    """What the case's SDPA mask is and what it forces, for `Prepared.info` (empty without an
    `attn_mask`): on the CPU the flash_attention kernel takes any mask, bool or float; on CUDA
    the flash kernel takes none, so torch is asked (`can_use_*_attention`) which fused backends
    take this one; the dispatcher falls back to math when none does. The record's `kernel`,
    read from the profiler, says what really ran."""
    import torch

    mask = options.get("attn_mask")
    if not isinstance(mask, torch.Tensor) or type(mask) is not torch.Tensor:
        return {}  # none, or causal_lower_right (a tensor subclass: its own fused kernel)
    info = {"sdpa_attn_mask": describe(mask, parts(case, terms=mask.dtype != torch.bool))}
    if not case.device.startswith("cuda"):
        info["sdpa_mask_forces"] = ("nothing on cpu: its flash_attention kernel takes a bool "
                                    "or float attn_mask")
        return info
    from torch.backends import cuda

    params = cuda.SDPAParams(q, k, v, mask, 0.0, False, options.get("enable_gqa", False))
    fused = [name for name, can in (("flash_attention", cuda.can_use_flash_attention),
                                    ("efficient_attention", cuda.can_use_efficient_attention),
                                    ("cudnn_attention", cuda.can_use_cudnn_attention))
             if can(params)]
    info["sdpa_mask_forces"] = (f"on cuda the fused backends that take it: "
                                f"{', '.join(fused) or 'none (math runs it)'}")
    return info


def prepared(case, call, *, layout=None, close=no_op, kernel=None, wrt=None,
             inputs=None, grads_to_numpy=None, info=None) -> Prepared:
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
        info=info or None,
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
