"""The seed formula in NumPy: softmax(Q Kᵀ / √d + mask) V, exactly as a first version is written.

It is the baseline every other implementation is read against, so it stays plain: one matmul
for the scores, a stable softmax (subtract the row max), one matmul for the output.
"""
from __future__ import annotations

import math

import numpy as np

from harness.problem.inputs import causal_keep
from impls.base import Adapter, Prepared


def attention(q, k, v, scale: float, mask, keep_weights: bool = False):
    """softmax(q kᵀ · scale + mask) v over the last two axes; `mask` is additive or None.
    With `keep_weights`, (output, softmax weights) for the backward."""
    scores = (q @ np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        scores = scores + mask
    scores = scores - scores.max(axis=-1, keepdims=True)
    weights = np.exp(scores)
    weights /= weights.sum(axis=-1, keepdims=True)
    out = weights @ v
    return (out, weights) if keep_weights else out


def attention_fwd_bwd(q, k, v, scale: float, mask, dout):
    """The forward, then the backward by hand (the weights P kept from the forward):
    dV = Pᵀ dO, dP = dO Vᵀ, dS = P ∘ (dP − rowsum(dP ∘ P)), dQ = scale · dS K, dK = scale · dSᵀ Q."""
    out, p = attention(q, k, v, scale, mask, keep_weights=True)
    dv = np.swapaxes(p, -1, -2) @ dout
    dp = dout @ np.swapaxes(v, -1, -2)
    ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))
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

    def prepare(self, case, inputs) -> Prepared:
        dtype = np.dtype(case.dtype)
        q, k, v = (np.ascontiguousarray(inputs[n], dtype=dtype) for n in ("q", "k", "v"))
        # A Python float: a NumPy float64 scalar would silently promote float32 scores.
        scale = 1.0 / math.sqrt(case.head_dim)
        mask = None
        if case.causal:
            keep = causal_keep(case.seq_len, case.seq_len_kv)
            mask = np.where(keep, 0.0, -np.inf).astype(dtype)
        call = lambda: attention(q, k, v, scale, mask)  # noqa: E731
        if case.mode == "fwd_bwd":
            dout = np.ascontiguousarray(inputs["dout"], dtype=dtype)
            call = lambda: attention_fwd_bwd(q, k, v, scale, mask, dout)  # noqa: E731
        return Prepared(
            call=call,
            to_numpy=lambda out: np.asarray(out, dtype=np.float64),
            out_dtype=lambda out: out.dtype.name,
        )


ADAPTERS = [NumpyAttention()]
