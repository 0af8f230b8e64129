"""Attention in JAX: the formula under jax.jit, and `jax.nn.dot_product_attention`.

Both are jitted (as JAX users run them); the first call traces and compiles (compile_s).
Masks and score terms are constants made in `prepare`; `jax.nn.dot_product_attention` works in
(B, N, H, D), transposed in `prepare`. Which implementation it chose (xla, cudnn) is read
from the program JAX lowers it to.

Grouped K/V heads: the formula repeats them for their query heads inside the jitted call (as
eager model code does, Hugging Face's `repeat_kv`); `jax.nn.dot_product_attention` takes fewer
K/V heads natively (query head h reads K/V head h // group).

The formula computes every modifier densely (the soft cap as a tanh; ALiBi, the bias and the
masks as one additive constant). `jax.nn.dot_product_attention` takes them natively where it
has the words: `is_causal` (top-left aligned: tests/test_adapters.py pins it),
`local_window_size` (also top-left: (window − 1, 0) keeps the window's keys),
`key_value_seq_lengths` for key padding or a ragged batch, `query_seq_lengths` for a ragged
square batch's padded query rows (their output zeroed), `bias` for ALiBi and the bias (float32,
the dtype its scores are in). A bottom-right mask (its own offset per sequence in a ragged
batch) it has no word for: the aligned boolean `mask`, window and real keys included. It has no
soft cap (no argument in JAX 0.10), nor a packed batch.
"""
from __future__ import annotations

import math

import numpy as np

from harness.case import BOTTOM_RIGHT
from harness.constants import (FEATURE_ALIBI, FEATURE_BIAS, FEATURE_BOTTOM_RIGHT,
                               FEATURE_KV_HEADS, FEATURE_PADDING, FEATURE_SOFTCAP, FEATURE_WINDOW)
from harness.problem.inputs import key_valid_lengths, query_valid_lengths
from harness.problem.modifiers import score_bias
from impls._jax import JaxAdapter, array, import_jax, jax_device, prepared
from impls._masks import DENSE_FEATURES, additive, describe, keep_mask, parts
from impls.base import TO_BNHD


class JaxNaive(JaxAdapter):
    name = "jax.naive"
    description = "The textbook formula in jax.numpy under jax.jit."
    features = DENSE_FEATURES

    def prepare(self, case, inputs):
        import jax
        import jax.numpy as jnp

        q, k, v = (array(case, inputs[n]) for n in ("q", "k", "v"))
        scale, softcap = 1.0 / math.sqrt(case.head_dim), float(case.softcap)
        group = case.group_size
        bias = additive(case, inputs)  # ALiBi + bias + masks
        constants = {} if bias is None else {"bias": array(case, bias)}

        def attention(q, k, v, bias=None):
            if group > 1:  # repeat_kv: query head h reads K/V head h // group
                k, v = jnp.repeat(k, group, axis=1), jnp.repeat(v, group, axis=1)
            scores = q @ k.swapaxes(-1, -2) * scale
            if softcap:
                scores = jnp.tanh(scores / softcap) * softcap
            if bias is not None:
                scores = scores + bias
            return jax.nn.softmax(scores, axis=-1) @ v

        return prepared(case, attention, (q, k, v), inputs=inputs, constants=constants)


def implementation(fn, args, constants=None) -> str:
    """What JAX lowers the attention to: a cuDNN fused call, or XLA's own ops."""
    import jax

    constants = constants or {}
    # its own trace: not the timed one's
    text = jax.jit(lambda xs, fixed: fn(*xs, **fixed)).lower(args, constants).as_text()
    return "cudnn" if "cudnn" in text.lower() else "xla"


class JaxSDPA(JaxAdapter):
    name = "jax.sdpa"
    description = "jax.nn.dot_product_attention under jax.jit (JAX chooses xla or cudnn)."
    # its xla implementation takes the softmax in float32: a float64 case would not be float64
    dtypes = ("float32", "bfloat16", "float16")
    features = frozenset({FEATURE_KV_HEADS, FEATURE_BOTTOM_RIGHT, FEATURE_PADDING,
                          FEATURE_WINDOW, FEATURE_ALIBI, FEATURE_BIAS})
    feature_notes = {FEATURE_SOFTCAP: ("jax.nn.dot_product_attention has no soft-cap argument "
                                       "(JAX 0.10): jax.naive computes it")}

    def prepare(self, case, inputs):
        jax = import_jax()
        q, k, v = (array(case, inputs[n], TO_BNHD) for n in ("q", "k", "v"))
        options, info = sdpa_options(case, inputs)
        constants = {n: jax.device_put(x, jax_device(case)) for n, x in options.items()
                     if isinstance(x, np.ndarray)}
        fixed = {n: x for n, x in options.items() if n not in constants}

        def attention(q, k, v, **arrays):
            return jax.nn.dot_product_attention(q, k, v, **fixed, **arrays)

        return prepared(case, attention, (q, k, v), layout=TO_BNHD, inputs=inputs,
                        kernel=implementation(attention, (q, k, v), constants),
                        info=info, constants=constants)


def sdpa_options(case, inputs) -> tuple[dict, dict]:
    """`jax.nn.dot_product_attention`'s keyword arguments for the case (NumPy arrays, put on
    the device by the caller), and what they hold, for `Prepared.info`."""
    options, info = {"is_causal": case.causal}, {}
    terms = score_bias(case, inputs)
    if terms is not None:  # ALiBi + bias, in the float32 its scores are computed in
        options["bias"] = np.ascontiguousarray(terms, dtype=np.float32)
        info["bias"] = describe(options["bias"], parts(case, masks=False))
    if case.causal_align == BOTTOM_RIGHT:  # its is_causal and its window are top-left
        options["is_causal"] = False
        keep = np.ascontiguousarray(keep_mask(case))
        options["mask"] = keep[None, None] if keep.ndim == 2 else keep
        info["mask"] = describe(options["mask"], parts(case, terms=False))
    else:
        if case.window:
            options["local_window_size"] = (case.window - 1, 0)
        valid = key_valid_lengths(case)
        if valid is not None:
            options["key_value_seq_lengths"] = valid.astype(np.int32)
        q_valid = query_valid_lengths(case)
        if q_valid is not None:
            options["query_seq_lengths"] = q_valid.astype(np.int32)
    named = ", ".join(n for n, x in options.items() if x is not False)
    if named:
        info["arguments"] = named
    return options, info


ADAPTERS = [JaxNaive(), JaxSDPA()]
