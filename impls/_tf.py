"""TensorFlow plumbing shared by the TF and Keras adapters: imports, device, tensors, Prepared.

TensorFlow places eager ops on a GPU whenever it has one, so the inputs are made inside the
case's device scope, and the timed call runs inside one entered by `prepared` and left by `close`.
"""
from __future__ import annotations

import contextlib
import os

from harness.constants import DTYPES, install_command
from harness.measure.memory import tf_device_name
from impls.base import Adapter, Prepared, no_op


def import_tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep oneDNN/CPU-feature chatter out of logs
    import tensorflow as tf

    return tf


def import_keras():
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # must precede the first keras import
    import_tf()
    import keras

    return keras


def keras_backend_reasons(name: str) -> list[str]:
    """Why a Keras adapter cannot measure here: Keras is set to another backend."""
    keras = import_keras()
    if keras.backend.backend() != "tensorflow":
        return [f"Keras is set to the {keras.backend.backend()!r} backend (KERAS_BACKEND); "
                f"{name} measures the TensorFlow backend"]
    return []


def device_reasons(case) -> list[str]:
    tf = import_tf()
    if case.device == "cpu":
        return []
    gpus = tf.config.list_physical_devices("GPU")
    index = int(case.device.partition(":")[2] or 0)
    if index >= len(gpus):
        return [f"TensorFlow {tf.__version__} sees {len(gpus)} GPU(s), so not {case.device} "
                f"(tensorflow-cpu has none)"]
    return []


def to_tensors(case, inputs, layout=None) -> list:
    """q, k, v as tensors of the case's dtype (made inside `on_device(case)`)."""
    tf = import_tf()
    tensors = []
    for name in ("q", "k", "v"):
        t = tf.cast(tf.constant(inputs[name]), case.dtype)
        tensors.append(tf.transpose(t, layout) if layout is not None else t)
    return tensors


def on_device(case):
    """The case's device scope (a context manager)."""
    return import_tf().device(tf_device_name(case.device))


def with_backward(forward, wrt: dict, dout):
    """forward + backward of sum(out · dout) under a fresh `tf.GradientTape`, as one call
    returning (out, {name: grad}). `wrt` holds tensors (watched) or variables. A source the
    output does not depend on gets a zero gradient (not None), as in the torch plumbing."""
    tf = import_tf()
    names, sources = list(wrt), list(wrt.values())

    def call():
        with tf.GradientTape() as tape:
            tape.watch(sources)
            out = forward()
        grads = tape.gradient(out, sources, output_gradients=dout,
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return out, dict(zip(names, grads))

    return call


def prepared(case, call, *, layout=None, wrt=None, inputs=None, grads_to_numpy=None) -> Prepared:
    """Wrap `call` with TF's conversions and enter the device scope it runs in (left by close).

    `layout` is the output's permutation from (B, H, N, D). Entered last, so a failing
    `prepare` never leaves a scope behind. Mode fwd_bwd: `wrt` names what to differentiate
    ({"q": q, ...}) and `inputs["dout"]` is dL/d(out) (permuted by `layout`); the call
    becomes `with_backward`'s.
    """
    tf = import_tf()
    if case.mode == "fwd_bwd":
        if wrt is None or inputs is None:
            raise ValueError("mode fwd_bwd needs wrt and inputs (with dout)")
        with on_device(case):
            dout = tf.cast(tf.constant(inputs["dout"]), case.dtype)
            if layout is not None:
                dout = tf.transpose(dout, layout)
        call = with_backward(call, wrt, dout)
    scope = contextlib.ExitStack()
    scope.enter_context(on_device(case))

    def to_numpy(out):
        if layout is not None:
            out = tf.transpose(out, layout)
        return tf.cast(out, tf.float64).numpy()  # exact for every dtype; NumPy has no bfloat16

    def sync():
        tf.test.experimental.sync_devices()

    return Prepared(
        call=call,
        to_numpy=to_numpy,
        out_dtype=lambda out: out.dtype.name,
        sync=sync if case.device != "cpu" else no_op,
        close=scope.close,
        grads_to_numpy=grads_to_numpy,
    )


class TFAdapter(Adapter):
    """Declarations common to the TensorFlow-family adapters."""

    framework = "tensorflow"
    devices = ("cpu", "cuda")
    dtypes = DTYPES
    requires = ("tensorflow",)
    install_hint = install_command("tf")

    def library_reasons(self, case) -> list[str]:
        return device_reasons(case)
