"""Keras 3 on JAX and on torch: keras.ops.dot_product_attention, keras.layers.MultiHeadAttention
and the Keras encoder block, the same three as on TensorFlow (impls/tf_keras.py,
impls/keras_encoders.py), eager, with the same weights in the same Keras layouts.

Keras fixes its backend when first imported, so each backend is a worker family of its own
(`keras-jax`, `keras-torch`: KERAS_BACKEND set before the process starts). Inputs are the
backend's own arrays; fwd_bwd differentiates with the backend's own autodiff: `jax.vjp` over
the layer's `stateless_call` (JAX has no mutable variables), `torch.autograd.grad` on torch.
"""
from __future__ import annotations

import contextlib
import math
import os

import numpy as np

from harness.constants import FEATURE_PADDING, install_command
from harness.problem.inputs import case_keep
from impls import _jax, _torch
from impls._keras import FEATURE_NOTES, FEATURES, grouping_reasons, mask_options
from impls.base import TO_BNHD, Adapter, Prepared, no_op
from impls.keras_encoders import attribute, block_map, encoder_block_class, exact_scale, mha_map


def import_keras(backend: str):
    os.environ.setdefault("KERAS_BACKEND", backend)  # must precede the first keras import
    if backend == "jax":
        _jax.import_jax()
    import keras

    return keras


class KerasOnBackend(Adapter):
    """Declarations and conversions common to Keras on one non-TensorFlow backend."""

    backend = "jax"
    devices = ("cpu",)
    modes = ("fwd", "fwd_bwd")
    # float64 is not float64 here: Keras 3.15 on torch returns float32 from
    # dot_product_attention, and on both backends its float64 layers err by ~1e-7 (float32)
    dtypes = ("float32", "bfloat16")

    def library_reasons(self, case) -> list[str]:
        keras = import_keras(self.backend)
        if keras.backend.backend() != self.backend:
            return [f"Keras is set to the {keras.backend.backend()!r} backend (KERAS_BACKEND); "
                    f"{self.name} measures the {self.backend} backend"]
        return _jax.device_reasons(case) if self.backend == "jax" else []

    def array(self, case, value, grad=False):
        if self.backend == "jax":
            return _jax.array(case, value)
        return _torch.tensor(case, value, grad=grad)

    def to_numpy(self, out) -> np.ndarray:
        if self.backend == "jax":
            return np.asarray(out).astype(np.float64)
        import torch

        return out.detach().to(device="cpu", dtype=torch.float64).numpy()

    def finish(self, case, fn, wrt: dict, inputs, *, layout=None, grads_to_numpy=None,
               close=None) -> Prepared:
        """The call: fn(*wrt values) (fwd), or it and the gradients of sum(out · G) w.r.t. each
        named argument (fwd_bwd), by the backend's autodiff; JAX's results are waited for."""
        names, values = list(wrt), list(wrt.values())
        dout = None
        if case.mode == "fwd_bwd":
            dout = inputs["dout"] if layout is None else np.transpose(inputs["dout"], layout)
            dout = self.array(case, dout)
        if self.backend == "jax":
            import jax

            if dout is None:
                def call():
                    return jax.block_until_ready(fn(*values))
            else:
                def call():
                    out, vjp = jax.vjp(fn, *values)
                    return jax.block_until_ready((out, dict(zip(names, vjp(dout)))))
        else:
            call = lambda: fn(*values)  # noqa: E731
            if dout is not None:
                call = _torch.with_backward(call, wrt, dout)

        def to_numpy(out):
            arr = self.to_numpy(out)
            return np.transpose(arr, layout) if layout is not None else arr

        return Prepared(call=call, to_numpy=to_numpy,
                        out_dtype=lambda out: str(out.dtype).removeprefix("torch."),
                        close=close or no_op, grads_to_numpy=grads_to_numpy)


class KerasOpsOn(KerasOnBackend):
    """keras.ops.dot_product_attention on this backend (grouped heads and the mask as
    impls/_keras.py says)."""

    features = FEATURES
    feature_notes = FEATURE_NOTES

    def library_reasons(self, case) -> list[str]:
        return (super().library_reasons(case)
                or grouping_reasons(import_keras(self.backend), case, self.name))

    def constant(self, case, value):
        """A boolean or float NumPy array as the backend's tensor on the case's device."""
        if self.backend == "jax":
            return _jax.import_jax().device_put(value, _jax.jax_device(case))
        import torch

        return torch.from_numpy(value).to(case.device)

    def prepare(self, case, inputs):
        keras = import_keras(self.backend)
        grad = case.mode == "fwd_bwd"
        q, k, v = (self.array(case, np.transpose(inputs[n], TO_BNHD), grad) for n in "qkv")
        scale = 1.0 / math.sqrt(case.head_dim)
        options = mask_options(case, inputs, lambda array: self.constant(case, array))

        def attention(q, k, v):
            return keras.ops.dot_product_attention(q, k, v, scale=scale, **options)

        return self.finish(case, attention, {"q": q, "k": k, "v": v}, inputs, layout=TO_BNHD)


class KerasLayerOn(KerasOnBackend):
    """keras.layers.MultiHeadAttention, or the encoder block, on this backend."""

    level = "mha"
    features = frozenset({FEATURE_PADDING})

    def build(self, case, keras, shape):
        if self.level == "mha":
            layer = keras.layers.MultiHeadAttention(case.heads, key_dim=case.head_dim,
                                                    dropout=0.0, dtype=case.dtype)
            layer.build(shape, shape)
            exact_scale(layer, case)
            return layer, mha_map("", case), lambda x, **o: layer(x, x, x, **o)
        block = encoder_block_class(keras)(case.d_model, case.heads,
                                           case.ffn_mult * case.d_model,
                                           norm_first=case.norm == "pre", dtype=case.dtype)
        block.build(shape)
        exact_scale(block.attention, case)
        return block, mha_map("attention.", case) + block_map(case), block

    def prepare(self, case, inputs):
        keras = import_keras(self.backend)
        layer, weight_map, call_layer = self.build(case, keras,
                                                   (case.batch, case.seq_len, case.d_model))
        variables = {}
        for ref, path, keras_shape in weight_map:
            variable = attribute(layer, path)
            value = keras.ops.convert_to_tensor(inputs[ref].reshape(keras_shape))
            variable.assign(keras.ops.cast(value, variable.dtype))
            variables[ref] = variable
        backward = case.mode == "fwd_bwd"
        x = self.array(case, inputs["x"], grad=backward)
        options = {"use_causal_mask": case.causal and case.padding == 0, "training": backward}
        keep = case_keep(case)
        if case.padding:  # Keras' convention: (B, Nq, Nk), True where a query may attend
            full = np.broadcast_to(keep, (case.batch, 1, case.seq_len, case.seq_len_kv))
            options["attention_mask"] = keras.ops.convert_to_tensor(np.ascontiguousarray(full[:, 0]))

        def to_reference(grads):
            return {name: self.to_numpy(g).reshape(inputs[name].shape)
                    for name, g in grads.items()}

        close = contextlib.ExitStack()
        if self.backend == "jax":
            trainable = layer.trainable_variables
            slot = {id(v): i for i, v in enumerate(trainable)}
            refs = list(variables)

            def forward(x, *weights):
                values = [v.value for v in trainable]
                for ref, w in zip(refs, weights):
                    values[slot[id(variables[ref])]] = w
                fixed = [v.value for v in layer.non_trainable_variables]
                inputs_ = (x, x, x) if self.level == "mha" else (x,)
                out, _ = layer.stateless_call(values, fixed, *inputs_, **options)
                return out

            wrt = {"x": x, **{ref: variables[ref].value for ref in refs}}
        else:
            import torch

            if not backward:
                close.enter_context(torch.no_grad())

            def forward(x, *weights):
                return call_layer(x, **options)

            wrt = {"x": x, **{ref: variables[ref].value for ref in variables}}
        return self.finish(case, forward, wrt, inputs, grads_to_numpy=to_reference,
                           close=close.close)


def _adapters():
    out = []
    for backend, module in (("jax", "jax"), ("torch", "torch")):
        family = f"keras-{backend}"
        hint = install_command("jax,keras" if backend == "jax" else "keras")
        common = {"backend": backend, "framework": family, "requires": ("keras", module),
                  "install_hint": hint}
        kinds = (("ops", KerasOpsOn, "kernel", "keras.ops.dot_product_attention"),
                 ("mha", KerasLayerOn, "mha",
                  "keras.layers.MultiHeadAttention (self-attention, dropout 0)"),
                 ("encoder", KerasLayerOn, "encoder",
                  "An encoder block of Keras layers (MultiHeadAttention, Dense, LayerNormalization)"))
        for kind, base, level, what in kinds:
            name = f"keras.{kind}.{backend}"
            # the op on JAX runs on a GPU too: its inputs are placed on the case's device and
            # its call blocks until the output is ready; the layers keep Keras' own placement
            devices = ("cpu", "cuda") if (backend, kind) == ("jax", "ops") else ("cpu",)
            cls = type(f"Keras{kind.title()}{backend.title()}", (base,),
                       {**common, "name": name, "level": level, "devices": devices,
                        "description": f"{what} on the {backend} backend, eager."})
            out.append(cls())
    return out


ADAPTERS = _adapters()
