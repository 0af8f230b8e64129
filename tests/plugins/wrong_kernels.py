"""Kernel adapters that get grouped K/V heads or a bottom-right causal mask wrong on purpose,
while declaring the feature: the harness must call each a mismatch, never ok.

Registered by tests/test_adapters.py (or with ATTNBENCH_PLUGINS=tests.plugins.wrong_kernels).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from harness.case import TOP_LEFT
from impls.numpy_ref import NumpyAttention


class TopLeftUnderBottomRight(NumpyAttention):
    """Masks top-left whatever the case asks: SDPA's is_causal taken for decode's alignment."""

    name = "test.wrong.top_left_causal"
    description = "test adapter: a bottom-right causal case masked top-left"

    def prepare(self, case, inputs):
        return super().prepare(dataclasses.replace(case, causal_align=TOP_LEFT), inputs)


class HeadsModulo(NumpyAttention):
    """Pairs query head h with K/V head h % kv_heads (K/V tiled, not repeated per group): the
    wrong grouping, and a different one from the reference's h // group whenever
    1 < kv_heads < heads."""

    name = "test.wrong.kv_heads_modulo"
    description = "test adapter: query head h reads K/V head h % kv_heads"

    def prepare(self, case, inputs):
        group = case.group_size
        tiled = {n: np.tile(inputs[n], (1, group, 1, 1)) for n in ("k", "v")}
        return super().prepare(dataclasses.replace(case, kv_heads=case.heads),
                               {**inputs, **tiled})


ADAPTERS = [TopLeftUnderBottomRight(), HeadsModulo()]
