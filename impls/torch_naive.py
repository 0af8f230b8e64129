"""Attention in PyTorch as a textbook or a first version writes it: no fused kernel.

The additive causal mask (either alignment) is built in `prepare`, so the timed call is the
formula; with grouped K/V heads it starts with Hugging Face's `repeat_kv`, as eager model code
does in every forward (impls._torch.repeat_kv).
"""
from __future__ import annotations

import math

from harness.constants import FEATURE_BOTTOM_RIGHT, FEATURE_KV_HEADS
from impls._torch import TorchAdapter, causal_bias, naive_attention, prepared, to_device


class TorchNaive(TorchAdapter):
    name = "torch.naive"
    description = "Textbook PyTorch attention: matmul, scale, additive mask, softmax, matmul."
    modes = ("fwd", "fwd_bwd")  # backward: torch autograd
    features = frozenset({FEATURE_KV_HEADS, FEATURE_BOTTOM_RIGHT})

    def prepare(self, case, inputs):
        q, k, v = to_device(case, inputs)
        scale = 1.0 / math.sqrt(case.head_dim)
        mask = causal_bias(case) if case.causal else None
        group = case.group_size

        def call():
            return naive_attention(q, k, v, mask, scale, group)

        return prepared(case, call, wrt={"q": q, "k": k, "v": v}, inputs=inputs)


ADAPTERS = [TorchNaive()]
