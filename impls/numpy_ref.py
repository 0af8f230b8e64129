"""The seed formula in NumPy: softmax(Q Kᵀ / √d + mask) V, exactly as a first version is written.

It is the baseline every other implementation is read against, so it stays plain: one matmul
for the scores, a stable softmax (subtract the row max), one matmul for the output. Grouped K/V
heads are repeated for their query heads inside the call, as eager model code does (Hugging
Face's `repeat_kv`). Every modifier is computed densely, the textbook way: the soft cap as a
tanh of the scores inside the call; ALiBi, the bias and every mask (causal of either
alignment, the window, key padding or a ragged batch) as one additive tensor built in `prepare`.
"""
from __future__ import annotations

import math

import numpy as np

from impls._masks import DENSE_FEATURES, additive
from impls.base import Adapter, Prepared


def repeat_kv(x, group: int):
    """(B, Hkv, N, D) -> (B, Hkv·group, N, D): each K/V head repeated for the `group` query
    heads that read it (query head h reads K/V head h // group)."""
    return x if group == 1 else np.repeat(x, group, axis=1)


def sum_groups(grad, group: int):
    """The backward of `repeat_kv`: (B, Hkv·group, N, D) -> (B, Hkv, N, D), each K/V head's
    gradient the sum over the query heads that read it."""
    if group == 1:
        return grad
    b, h, n, d = grad.shape
    return grad.reshape(b, h // group, group, n, d).sum(axis=2)


def attention(q, k, v, scale: float, mask, keep_weights: bool = False, softcap: float = 0.0):
    """softmax(cap(q kᵀ · scale) + mask) v over the last two axes; `mask` is additive or None,
    cap(s) = softcap · tanh(s / softcap) when `softcap` (a Python float, as `scale`). With
    `keep_weights`, (output, softmax weights, tanh of the scores or None) for the backward."""
    scores = (q @ np.swapaxes(k, -1, -2)) * scale
    capped = None
    if softcap:
        capped = np.tanh(scores / softcap)
        scores = capped * softcap
    if mask is not None:
        scores = scores + mask
    scores = scores - scores.max(axis=-1, keepdims=True)
    weights = np.exp(scores)
    weights /= weights.sum(axis=-1, keepdims=True)
    out = weights @ v
    return (out, weights, capped) if keep_weights else out


def attention_fwd_bwd(q, k, v, scale: float, mask, dout, softcap: float = 0.0):
    """The forward, then the backward by hand (the weights P kept from the forward):
    dV = Pᵀ dO, dP = dO Vᵀ, dS = P ∘ (dP − rowsum(dP ∘ P)), through the cap dS ∘ (1 − tanh²),
    dQ = scale · dS K, dK = scale · dSᵀ Q."""
    out, p, capped = attention(q, k, v, scale, mask, keep_weights=True, softcap=softcap)
    dv = np.swapaxes(p, -1, -2) @ dout
    dp = dout @ np.swapaxes(v, -1, -2)
    ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))
    if capped is not None:
        ds = ds * (1 - capped * capped)
    dq = (ds @ k) * scale
    dk = (np.swapaxes(ds, -1, -2) @ q) * scale
    return out, {"q": dq, "k": dk, "v": dv}


class NumpyAttention(Adapter):
    name = "numpy"
    framework = "numpy"
    description = "The seed formula softmax(Q Kᵀ/√d)V in NumPy with a stable softmax."
    dtypes = ("float64", "float32")  # NumPy has no bfloat16, and float16 matmul is not BLAS
    requires = ("numpy",)
    install_hint = "pip install numpy"
    modes = ("fwd", "fwd_bwd")  # backward written by hand (attention_fwd_bwd)
    features = DENSE_FEATURES

    def prepare(self, case, inputs) -> Prepared:
        dtype = np.dtype(case.dtype)
        q, k, v = (np.ascontiguousarray(inputs[n], dtype=dtype) for n in ("q", "k", "v"))
        # Python floats: a NumPy float64 scalar would silently promote float32 scores.
        scale, softcap = 1.0 / math.sqrt(case.head_dim), float(case.softcap)
        mask = additive(case, inputs)  # ALiBi + bias + masks, float64 until cast
        if mask is not None:
            mask = mask.astype(dtype)
        group = case.group_size
        if case.mode == "fwd_bwd":
            dout = np.ascontiguousarray(inputs["dout"], dtype=dtype)

            def call():
                out, grads = attention_fwd_bwd(q, repeat_kv(k, group), repeat_kv(v, group),
                                               scale, mask, dout, softcap)
                return out, {"q": grads["q"], "k": sum_groups(grads["k"], group),
                             "v": sum_groups(grads["v"], group)}
        else:
            def call():
                return attention(q, repeat_kv(k, group), repeat_kv(v, group), scale, mask,
                                 softcap=softcap)

        return Prepared(
            call=call,
            to_numpy=lambda out: np.asarray(out, dtype=np.float64),
            out_dtype=lambda out: out.dtype.name,
        )


ADAPTERS = [NumpyAttention()]
