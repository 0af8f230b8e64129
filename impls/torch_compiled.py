"""Attention under `torch.compile` (inductor): the seed formula, SDPA, the encoder layer, and
FlexAttention, the way a user who compiles for a fixed shape runs them.

Each case compiles afresh (`torch.compiler.reset()` in `prepare`, as a new process would), with
`fullgraph=True` and static shapes; its first call (tracing, compilation, autotuning) is timed
apart by the harness as compile_s. Nothing may quietly run eager instead of the compiled code:
a graph break raises (fullgraph), a recompilation raises (a recompile limit of one with
`fail_on_recompile_limit_hit`, where dynamo would otherwise fall back to eager at its limit), FlexAttention's warning that
it runs unfused is an error, and the harness checks in a profile that the compiled graph ran.

Grouped K/V heads, masks and modifiers: the formula repeats K/V heads inside the compiled
function (`repeat_kv`, as eager model code does) and takes the dense additive mask (masks,
ALiBi, bias) with the soft cap as a tanh, as torch.naive; SDPA gets the same options as eager
(impls._torch.sdpa_options: a bool or float attn_mask); FlexAttention (impls/torch_flex.py)
takes `enable_gqa=True`, a mask_mod and a score_mod.
"""
from __future__ import annotations

import math

from impls._compile import CompiledKernel, compile_static, strict
from impls._masks import DENSE_FEATURES
from impls._torch import dense_mask, naive_attention, sdpa_mask_info, sdpa_options
from impls.encoders import TorchEncoder
from impls.torch_sdpa import TorchSDPA


class CompiledNaive(CompiledKernel):
    name = "torch.compile.naive"
    description = "The textbook formula (torch.naive) under torch.compile (inductor)."

    features = DENSE_FEATURES

    def function(self, case, q, k, v, inputs):
        extra = (dense_mask(case, inputs), 1.0 / math.sqrt(case.head_dim), case.group_size,
                 float(case.softcap))
        return naive_attention, extra, None


class CompiledSDPA(CompiledKernel):
    name = "torch.compile.sdpa"
    description = "scaled_dot_product_attention under torch.compile (inductor)."

    features = TorchSDPA.features
    feature_notes = TorchSDPA.feature_notes

    def function(self, case, q, k, v, inputs):
        import torch.nn.functional as F

        options = sdpa_options(case, q, k, v, inputs)

        def sdpa(q, k, v):
            return F.scaled_dot_product_attention(q, k, v, **options)

        return sdpa, (), sdpa_mask_info(case, options, q, k, v)


class CompiledEncoder(TorchEncoder):
    name = "torch.compile.encoder"
    description = ("torch.nn.TransformerEncoderLayer (training mode, as torch.encoder) under "
                   "torch.compile (inductor).")
    kernel_probe = "compiled"
    labels = False

    def runner(self, module):
        return compile_static(module)

    def prepare(self, case, inputs, labels: bool = False):
        out = super().prepare(case, inputs, labels)
        context = strict(out.close)
        out.close, out.kernel, out.compiled = context.close, "inductor", True
        return out


ADAPTERS = [CompiledNaive(), CompiledSDPA(), CompiledEncoder()]
