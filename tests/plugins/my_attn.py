"""Torch functions as a kernel author writes them, run with `attnbench run --fn
tests.plugins.my_attn:NAME` in tests/test_fn.py: a correct one, one that ignores `causal`, one
with another signature, and one that declares grouped K/V heads."""
from __future__ import annotations

import torch.nn.functional as F


def attention(q, k, v, *, causal: bool, scale: float):
    """SDPA, causal as asked."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)


def ignores_causal(q, k, v, *, causal: bool, scale: float):
    """Always full attention: wrong on every causal case."""
    return F.scaled_dot_product_attention(q, k, v, scale=scale)


def takes_a_mask(q, k, v, mask, *, causal: bool, scale: float):
    """Another signature: wants a mask the harness never passes."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


def grouped(q, k, v, *, causal: bool, scale: float, **options):
    """Takes K/V with fewer heads than Q (query head h reads K/V head h // group)."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale,
                                          enable_gqa=True)


grouped.attnbench_features = {"kv_heads"}
grouped.attnbench_modes = ("fwd", "fwd_bwd")
