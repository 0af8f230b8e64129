"""Adapters that go wrong on purpose, loaded through $ATTNBENCH_PLUGINS in end-to-end tests.

Each one exercises a path of the runner: a wrong result, an exception, a memory error,
a crash of the worker process, a hang.
"""
from __future__ import annotations

import os
import time

import numpy as np

from impls.base import Adapter, Prepared


def _softmax_attention(q, k, v, scale):
    s = q @ np.swapaxes(k, -1, -2) * scale
    s -= s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    return (p / p.sum(axis=-1, keepdims=True)) @ v


class _NumpyFull(Adapter):
    framework = "numpy"
    dtypes = ("float64", "float32")
    description = "test adapter"

    def compute(self, q, k, v):
        return _softmax_attention(q, k, v, 1.0 / float(np.sqrt(q.shape[-1])))

    def prepare(self, case, inputs):
        q, k, v = (inputs[n].astype(case.dtype) for n in ("q", "k", "v"))
        return Prepared(call=lambda: self.compute(q, k, v),
                        to_numpy=lambda out: np.asarray(out, dtype=np.float64),
                        out_dtype=lambda out: str(out.dtype))


class Unscaled(_NumpyFull):
    """Forgets the 1/sqrt(d) scale: must be caught as a mismatch."""
    name = "fault.unscaled"

    def compute(self, q, k, v):
        return _softmax_attention(q, k, v, 1.0)


class Raises(_NumpyFull):
    name = "fault.raises"

    def compute(self, q, k, v):
        raise ValueError("deliberate failure")


class NoMemory(_NumpyFull):
    name = "fault.nomemory"

    def compute(self, q, k, v):
        raise MemoryError("Unable to allocate 64.0 GiB for an array")


class Crashes(_NumpyFull):
    name = "fault.crashes"

    def compute(self, q, k, v):
        os.abort()


class Hangs(_NumpyFull):
    name = "fault.hangs"

    def compute(self, q, k, v):
        time.sleep(3600)


ADAPTERS = [Unscaled(), Raises(), NoMemory(), Crashes(), Hangs()]
