"""Keras 3 layers (TensorFlow backend, eager): `keras.layers.MultiHeadAttention` (level `mha`)
and an encoder block built from MultiHeadAttention, Dense and LayerNormalization (`encoder`).

The layers are built in `prepare` with the case's dtype as their dtype policy, and the
harness's float64 weights are assigned to their variables in Keras' layouts (MultiHeadAttention
keeps its projections as (d_model, heads, head_dim) and (heads, head_dim, d_model)). fwd is
the layer call; fwd_bwd the call and the backward of sum(out · G) under a fresh
tf.GradientTape, with respect to x and every variable. Dropout is 0; LayerNormalization's
epsilon is set to torch's 1e-5 (Keras' default is 1e-3). Only ever imported next to
TensorFlow in a worker of its own.
"""
from __future__ import annotations

import functools

import numpy as np

from harness.constants import FEATURE_PADDING
from harness.problem.inputs import case_keep
from impls._tf import (TFAdapter, import_keras, import_tf, keras_backend_reasons, on_device,
                      prepared)


def mha_map(prefix: str, case) -> list[tuple]:
    """(reference name, attribute path of the variable, shape in Keras)."""
    d, h, hd = case.d_model, case.heads, case.head_dim
    out = []
    for p, sub in zip("qkv", ("query_dense", "key_dense", "value_dense")):
        out += [(f"w{p}", f"{prefix}{sub}.kernel", (d, h, hd)),
                (f"b{p}", f"{prefix}{sub}.bias", (h, hd))]
    return out + [("wo", f"{prefix}output_dense.kernel", (h, hd, d)),
                  ("bo", f"{prefix}output_dense.bias", (d,))]


def block_map(case) -> list[tuple]:
    d, ff = case.d_model, case.ffn_mult * case.d_model
    return [("ln1_g", "norm1.gamma", (d,)), ("ln1_b", "norm1.beta", (d,)),
            ("w1", "ffn1.kernel", (d, ff)), ("b1", "ffn1.bias", (ff,)),
            ("w2", "ffn2.kernel", (ff, d)), ("b2", "ffn2.bias", (d,)),
            ("ln2_g", "norm2.gamma", (d,)), ("ln2_b", "norm2.beta", (d,))]


def attribute(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def exact_scale(attention, case) -> None:
    """Keras turns its 1/√head_dim into a float32 constant before casting it to the logits'
    dtype; in float64 that alone costs ~1e-8 (the float64 bar is 1e-10). For float64 the same
    scale is set as a float64 scalar; other dtypes are left exactly as Keras made them."""
    if case.dtype == "float64":
        attention._inverse_sqrt_key_dim = np.float64(1.0 / np.sqrt(case.head_dim))


@functools.cache
def encoder_block_class(keras):
    """The block's Layer class for this keras (any backend: it is built of Keras layers)."""

    class EncoderBlock(keras.layers.Layer):
        """One Transformer encoder layer from Keras parts: post-norm (the seeds') or pre-norm."""

        def __init__(self, d_model, num_heads, d_ff, norm_first=False, **kwargs):
            super().__init__(**kwargs)
            policy = {"dtype": self.dtype_policy}
            self.attention = keras.layers.MultiHeadAttention(
                num_heads, key_dim=d_model // num_heads, dropout=0.0, **policy)
            self.ffn1 = keras.layers.Dense(d_ff, activation="relu", **policy)
            self.ffn2 = keras.layers.Dense(d_model, **policy)
            self.norm1 = keras.layers.LayerNormalization(epsilon=1e-5, **policy)
            self.norm2 = keras.layers.LayerNormalization(epsilon=1e-5, **policy)
            self.norm_first = norm_first

        def build(self, input_shape):
            self.attention.build(input_shape, input_shape)
            self.norm1.build(input_shape)
            self.ffn1.build(input_shape)
            self.ffn2.build(tuple(input_shape[:-1]) + (self.ffn1.units,))
            self.norm2.build(input_shape)

        def call(self, x, attention_mask=None, use_causal_mask=False, training=None):
            def attend(y):
                return self.attention(y, y, y, attention_mask=attention_mask,
                                      use_causal_mask=use_causal_mask, training=training)

            if self.norm_first:
                h = x + attend(self.norm1(x))
                return h + self.ffn2(self.ffn1(self.norm2(h)))
            h = self.norm1(x + attend(x))
            return self.norm2(h + self.ffn2(self.ffn1(h)))

    return EncoderBlock


class KerasLayer(TFAdapter):
    """Shared `prepare` for the Keras layer adapters."""

    level = "mha"
    requires = ("tensorflow", "keras")
    modes = ("fwd", "fwd_bwd")
    dtypes = ("float64", "float32", "bfloat16")
    features = frozenset({FEATURE_PADDING})

    def library_reasons(self, case) -> list[str]:
        return keras_backend_reasons(self.name) or super().library_reasons(case)

    def build(self, case, keras):
        raise NotImplementedError

    def weight_map(self, case) -> list[tuple]:
        raise NotImplementedError

    def prepare(self, case, inputs):
        keras = import_keras()
        tf = import_tf()
        shape = (case.batch, case.seq_len, case.d_model)
        with on_device(case):
            layer, call_layer = self.build(case, keras, shape)
            variables = {}
            for ref, path, keras_shape in self.weight_map(case):
                variable = attribute(layer, path)
                variable.assign(tf.cast(tf.constant(inputs[ref].reshape(keras_shape)),
                                        variable.dtype))
                variables[ref] = variable.value  # the tf.Variable a GradientTape can watch
            x = tf.cast(tf.constant(inputs["x"]), case.dtype)
            keep = case_keep(case)
            options = {"use_causal_mask": case.causal and case.padding == 0}
            if case.padding:  # Keras' convention: (B, Nq, Nk), True where a query may attend
                full = np.broadcast_to(keep, (case.batch, 1, case.seq_len, case.seq_len_kv))
                options["attention_mask"] = tf.constant(full[:, 0])
        backward = case.mode == "fwd_bwd"
        options["training"] = backward

        def to_reference(grads):
            out = {"x": tf.cast(grads["x"], tf.float64).numpy()}
            for ref, _, _ in self.weight_map(case):
                g = tf.cast(grads[ref], tf.float64).numpy()
                out[ref] = g.reshape(inputs[ref].shape)
            return out

        return prepared(case, lambda: call_layer(x, **options),
                        wrt={"x": x, **variables} if backward else None, inputs=inputs,
                        grads_to_numpy=to_reference)


class KerasMHA(KerasLayer):
    name = "keras.mha"
    description = ("keras.layers.MultiHeadAttention (self-attention, dropout 0), TensorFlow "
                   "backend, eager.")

    def build(self, case, keras, shape):
        layer = keras.layers.MultiHeadAttention(case.heads, key_dim=case.head_dim, dropout=0.0,
                                                dtype=case.dtype)
        layer.build(shape, shape)
        exact_scale(layer, case)

        def call(x, **options):
            return layer(x, x, x, **options)

        return layer, call

    def weight_map(self, case):
        return mha_map("", case)


class KerasEncoder(KerasLayer):
    name = "keras.encoder"
    level = "encoder"
    description = ("An encoder block of Keras layers (MultiHeadAttention, Dense, "
                   "LayerNormalization), TensorFlow backend, eager.")

    def build(self, case, keras, shape):
        block = encoder_block_class(keras)(case.d_model, case.heads, case.ffn_mult * case.d_model,
                                       norm_first=case.norm == "pre", dtype=case.dtype)
        block.build(shape)
        exact_scale(block.attention, case)
        return block, block

    def weight_map(self, case):
        return mha_map("attention.", case) + block_map(case)


ADAPTERS = [KerasMHA(), KerasEncoder()]
