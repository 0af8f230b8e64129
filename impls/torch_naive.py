"""Attention in PyTorch as a textbook or a first version writes it: no fused kernel.

The additive mask (causal of either alignment, window, key padding or a ragged batch, ALiBi,
the bias) is built in `prepare`, so the timed call is the formula, with the soft cap as a tanh
of the scores; with grouped K/V heads it starts with Hugging Face's `repeat_kv`, as eager model
code does in every forward (impls._torch.repeat_kv).
"""
from __future__ import annotations

import math

from impls._masks import DENSE_FEATURES
from impls._torch import TorchAdapter, dense_mask, naive_attention, prepared, to_device


class TorchNaive(TorchAdapter):
    name = "torch.naive"
    description = "Textbook PyTorch attention: matmul, scale, additive mask, softmax, matmul."
    modes = ("fwd", "fwd_bwd")  # backward: torch autograd
    features = DENSE_FEATURES

    def prepare(self, case, inputs):
        q, k, v = to_device(case, inputs)
        scale = 1.0 / math.sqrt(case.head_dim)
        mask = dense_mask(case, inputs)
        group, softcap = case.group_size, float(case.softcap)

        def call():
            return naive_attention(q, k, v, mask, scale, group, softcap)

        return prepared(case, call, wrt={"q": q, "k": k, "v": v}, inputs=inputs)


ADAPTERS = [TorchNaive()]
