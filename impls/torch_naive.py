"""Attention in PyTorch as a textbook or a first version writes it: no fused kernel.

The additive causal mask is built in `prepare`, so the timed call is only the formula.
"""
from __future__ import annotations

import math

from impls._torch import TorchAdapter, causal_bias, naive_attention, prepared, to_device


class TorchNaive(TorchAdapter):
    name = "torch.naive"
    description = "Textbook PyTorch attention: matmul, scale, additive mask, softmax, matmul."
    modes = ("fwd", "fwd_bwd")  # backward: torch autograd

    def prepare(self, case, inputs):
        q, k, v = to_device(case, inputs)
        scale = 1.0 / math.sqrt(case.head_dim)
        mask = causal_bias(case) if case.causal else None

        def call():
            return naive_attention(q, k, v, mask, scale)

        return prepared(case, call, wrt={"q": q, "k": k, "v": v}, inputs=inputs)


ADAPTERS = [TorchNaive()]
