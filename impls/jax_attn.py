"""Attention in JAX: the formula under jax.jit, and `jax.nn.dot_product_attention`.

Both are jitted (as JAX users run them); the first call traces and compiles (compile_s).
The causal mask is a constant made in `prepare`; `jax.nn.dot_product_attention` works in
(B, N, H, D), transposed in `prepare`. Which implementation it chose (xla, cudnn) is read
from the program JAX lowers it to.

Grouped K/V heads: the formula repeats them for their query heads inside the jitted call (as
eager model code does, Hugging Face's `repeat_kv`); `jax.nn.dot_product_attention` takes fewer
K/V heads natively (query head h reads K/V head h // group). Its `is_causal` is top-left
aligned (tests/test_adapters.py pins it), so a bottom-right case passes the aligned boolean mask
instead.
"""
from __future__ import annotations

import math

import numpy as np

from harness.case import BOTTOM_RIGHT
from harness.constants import FEATURE_BOTTOM_RIGHT, FEATURE_KV_HEADS
from harness.problem.inputs import causal_keep
from impls._jax import JaxAdapter, array, import_jax, jax_device, prepared
from impls.base import TO_BNHD


class JaxNaive(JaxAdapter):
    name = "jax.naive"
    description = "The textbook formula in jax.numpy under jax.jit."
    features = frozenset({FEATURE_KV_HEADS, FEATURE_BOTTOM_RIGHT})

    def prepare(self, case, inputs):
        import jax
        import jax.numpy as jnp

        q, k, v = (array(case, inputs[n]) for n in ("q", "k", "v"))
        scale = 1.0 / math.sqrt(case.head_dim)
        group = case.group_size
        bias = None
        if case.causal:
            keep = causal_keep(case.seq_len, case.seq_len_kv, case.causal_align)
            bias = array(case, np.where(keep, 0.0, -np.inf))

        def attention(q, k, v):
            if group > 1:  # repeat_kv: query head h reads K/V head h // group
                k, v = jnp.repeat(k, group, axis=1), jnp.repeat(v, group, axis=1)
            scores = q @ k.swapaxes(-1, -2) * scale
            if bias is not None:
                scores = scores + bias
            return jax.nn.softmax(scores, axis=-1) @ v

        return prepared(case, attention, (q, k, v), inputs=inputs)


def implementation(fn, args) -> str:
    """What JAX lowers the attention to: a cuDNN fused call, or XLA's own ops."""
    import jax

    text = jax.jit(lambda *xs: fn(*xs)).lower(*args).as_text()  # its own trace: not the timed one's
    return "cudnn" if "cudnn" in text.lower() else "xla"


class JaxSDPA(JaxAdapter):
    name = "jax.sdpa"
    description = "jax.nn.dot_product_attention under jax.jit (JAX chooses xla or cudnn)."
    # its xla implementation takes the softmax in float32: a float64 case would not be float64
    dtypes = ("float32", "bfloat16", "float16")
    features = frozenset({FEATURE_KV_HEADS, FEATURE_BOTTOM_RIGHT})

    def prepare(self, case, inputs):
        jax = import_jax()
        q, k, v = (array(case, inputs[n], TO_BNHD) for n in ("q", "k", "v"))
        causal, mask = case.causal, None
        if case.causal_align == BOTTOM_RIGHT:  # its is_causal is top-left
            keep = causal_keep(case.seq_len, case.seq_len_kv, case.causal_align)
            mask = jax.device_put(keep[None, None], jax_device(case))  # (1, 1, Nq, Nk)
            causal = False

        def attention(q, k, v):
            return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal)

        return prepared(case, attention, (q, k, v), layout=TO_BNHD, inputs=inputs,
                        kernel=implementation(attention, (q, k, v)))


ADAPTERS = [JaxNaive(), JaxSDPA()]
