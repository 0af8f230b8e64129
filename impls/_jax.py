"""JAX plumbing shared by the JAX adapters: import with float64 enabled, devices, arrays, and
`Prepared` whose call blocks until its outputs are ready (JAX dispatches asynchronously, so
the clock is read only after `block_until_ready`).

JAX never shares a process with torch or TensorFlow: these adapters run in the `jax` family.
"""
from __future__ import annotations

import os

import numpy as np

from harness.constants import DTYPES, install_command
from impls.base import Adapter, Prepared


def import_jax():
    """jax with float64 arrays allowed (a float64 case must compute in float64)."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax

    jax.config.update("jax_enable_x64", True)
    return jax


def jax_device(case):
    """The jax.Device of the case: cpu, or the GPU cuda:N names."""
    jax = import_jax()
    if case.device == "cpu":
        return jax.devices("cpu")[0]
    return jax.devices("gpu")[int(case.device.partition(":")[2] or 0)]


def device_reasons(case) -> list[str]:
    if case.device == "cpu":
        return []
    jax = import_jax()
    try:
        gpus = jax.devices("gpu")
    except RuntimeError:
        gpus = []
    index = int(case.device.partition(":")[2] or 0)
    if index >= len(gpus):
        return [f"JAX {jax.__version__} sees {len(gpus)} GPU(s), so not {case.device} "
                f"(the CPU jaxlib has none)"]
    return []


def array(case, value, layout=None):
    """A float64 NumPy array as a JAX array of the case's dtype on its device."""
    jax = import_jax()
    import jax.numpy as jnp

    if layout is not None:
        value = np.transpose(value, layout)
    return jax.device_put(jnp.asarray(value, dtype=case.dtype), jax_device(case))


def prepared(case, fn, args: tuple, *, layout=None, kernel=None, inputs=None,
             constants: dict | None = None, info=None) -> Prepared:
    """`fn(*args, **constants)` under jax.jit as the call (compiled on its first call:
    compile_s). `constants` (masks, biases, lengths: arrays made in `prepare`) are arguments
    of the jitted function, not values baked into its program, and are never differentiated.

    Mode fwd_bwd: the call is the forward and `jax.vjp` of sum(out · G) w.r.t. every argument
    named in `args` order q, k, v, jitted together; `inputs["dout"]` is G.
    """
    jax = import_jax()
    names = ("q", "k", "v")
    constants = constants or {}
    if case.mode == "fwd_bwd":
        dout = array(case, inputs["dout"], layout)

        def forward_backward(xs, fixed):
            out, vjp = jax.vjp(lambda *ys: fn(*ys, **fixed), *xs)
            return out, dict(zip(names, vjp(dout)))

        jitted = jax.jit(forward_backward)
    else:
        jitted = jax.jit(lambda xs, fixed: fn(*xs, **fixed))

    def call():
        return jax.block_until_ready(jitted(args, constants))

    def to_numpy(out):
        arr = np.asarray(out).astype(np.float64)  # exact for every dtype (ml_dtypes bfloat16)
        return np.transpose(arr, layout) if layout is not None else arr

    return Prepared(call=call, to_numpy=to_numpy, out_dtype=lambda out: str(out.dtype),
                    kernel=kernel, compiled=True, info=info or None)


class JaxAdapter(Adapter):
    """Declarations common to the JAX adapters."""

    framework = "jax"
    devices = ("cpu", "cuda")
    dtypes = DTYPES
    modes = ("fwd", "fwd_bwd")
    requires = ("jax",)
    install_hint = install_command("jax")

    def library_reasons(self, case) -> list[str]:
        return device_reasons(case)
