"""TensorFlow and Keras attention: the classic TF tutorial function (eager, as a graph under
tf.function, and XLA-compiled with jit_compile=True), and Keras 3's fused op (eager).

The graph and XLA variants compile on their first call (timed apart as compile_s); in fwd_bwd
the forward and its GradientTape backward are one function. Keras 3 works in (B, N, H, D); the transpose happens in
`prepare`. This module is only ever imported next to TensorFlow in a worker of its own.

Grouped K/V heads: the tutorial's function repeats them for their query heads inside the call
(`tf.repeat`, as eager model code does, Hugging Face's `repeat_kv`); Keras takes them as they
are (impls/_keras.py). Masks: the tutorial's `mask * -1e9` generalised, 1 wherever a score is
not kept (causal of either alignment, window, key padding or a ragged batch), with ALiBi and
the bias added to the same constant and the soft cap a tanh of the logits (every modifier
computed densely, as the textbook adapters do); Keras gets a boolean mask and a bias
(impls/_keras.py; its `is_causal` is top-left).
"""
from __future__ import annotations

import math

import numpy as np

from harness.problem.modifiers import score_bias
from impls._masks import DENSE_FEATURES, keep_mask
from impls._keras import FEATURE_NOTES, FEATURES, grouping_reasons, mask_options
from impls._tf import (TFAdapter, import_keras, import_tf, keras_backend_reasons, on_device,
                      prepared, to_tensors)
from impls.base import TO_BNHD


class TFNaive(TFAdapter):
    name = "tf.naive"
    description = "The TensorFlow tutorial's scaled_dot_product_attention, eager."
    modes = ("fwd", "fwd_bwd")  # backward: tf.GradientTape
    features = DENSE_FEATURES

    def prepare(self, case, inputs):
        tf = import_tf()
        bias, group, softcap = None, case.group_size, float(case.softcap)
        with on_device(case):
            q, k, v = to_tensors(case, inputs)
            sqrt_dk = tf.math.sqrt(tf.cast(case.head_dim, case.dtype))  # the tutorial's dk
            keep, terms = keep_mask(case), score_bias(case, inputs)
            if keep is not None:
                # The tutorial's mask (1 where a score is dropped: its look-ahead mask, and
                # padding) and its `mask * -1e9` depend only on the case: hoisted out of the
                # timed call. In float16 -1e9 overflows to -inf and 0 * -inf is NaN: the
                # tutorial's formula, faithfully.
                bias = tf.constant(1.0 - keep, case.dtype) * -1e9
            if terms is not None:  # ALiBi and the bias, added to the same constant
                terms = tf.constant(np.ascontiguousarray(terms), case.dtype)
                bias = terms if bias is None else bias + terms

        def call():
            keys, values = k, v
            if group > 1:  # repeat_kv: query head h reads K/V head h // group
                keys, values = tf.repeat(k, group, axis=1), tf.repeat(v, group, axis=1)
            logits = tf.matmul(q, keys, transpose_b=True) / sqrt_dk
            if softcap:
                logits = tf.math.tanh(logits / softcap) * softcap
            if bias is not None:
                logits += bias
            weights = tf.nn.softmax(logits, axis=-1)
            return tf.matmul(weights, values)

        return prepared(case, call, wrt={"q": q, "k": k, "v": v}, inputs=inputs)


class TFNaiveGraph(TFNaive):
    """The same call under tf.function; `jit` asks XLA to compile it (it fails rather than
    falling back when it cannot)."""

    name = "tf.naive.graph"
    description = "The TensorFlow tutorial's scaled_dot_product_attention under tf.function."
    jit = False

    def prepare(self, case, inputs):
        out = super().prepare(case, inputs)
        out.call = import_tf().function(out.call, jit_compile=self.jit)
        out.compiled = True
        return out


class TFNaiveXLA(TFNaiveGraph):
    name = "tf.naive.xla"
    description = ("The TensorFlow tutorial's scaled_dot_product_attention under "
                   "tf.function(jit_compile=True): XLA.")
    jit = True


class KerasOps(TFAdapter):
    name = "keras.ops"
    description = "keras.ops.dot_product_attention on the TensorFlow backend, eager."
    requires = ("tensorflow", "keras")
    modes = ("fwd", "fwd_bwd")  # backward: tf.GradientTape
    features = FEATURES
    feature_notes = FEATURE_NOTES

    def library_reasons(self, case) -> list[str]:
        return (keras_backend_reasons(self.name) or super().library_reasons(case)
                or grouping_reasons(import_keras(), case, self.name))

    def prepare(self, case, inputs):
        keras = import_keras()
        tf = import_tf()
        with on_device(case):
            q, k, v = to_tensors(case, inputs, layout=TO_BNHD)
            # Keras makes its default scale, and a Python-float scale, float32 before casting
            # it to the logits' dtype: float64 would lose its precision (errors ~1e-8). The
            # same 1/√d as a tensor of the case's dtype is exact; other dtypes are unchanged.
            scale = tf.constant(1.0 / math.sqrt(case.head_dim), case.dtype)
            options = mask_options(case, inputs, tf.constant)
        return prepared(
            case,
            lambda: keras.ops.dot_product_attention(q, k, v, scale=scale, **options),
            layout=TO_BNHD,
            wrt={"q": q, "k": k, "v": v},
            inputs=inputs,
        )


ADAPTERS = [TFNaive(), TFNaiveGraph(), TFNaiveXLA(), KerasOps()]
