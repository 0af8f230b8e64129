"""Attention under `torch.compile` (inductor): the seed formula, SDPA, the encoder layer, and
FlexAttention, the way a user who compiles for a fixed shape runs them.

Each case compiles afresh (`torch.compiler.reset()` in `prepare`, as a new process would), with
`fullgraph=True` and static shapes; its first call (tracing, compilation, autotuning) is timed
apart by the harness as compile_s. Nothing may quietly run eager instead of the compiled code:
a graph break raises (fullgraph), a recompilation raises (a recompile limit of one with
`fail_on_recompile_limit_hit`, where dynamo would otherwise fall back to eager at its limit), FlexAttention's warning that
it runs unfused is an error, and the harness checks in a profile that the compiled graph ran.

Grouped K/V heads and a bottom-right causal mask: the formula repeats K/V heads inside the
compiled function (`repeat_kv`, as eager model code does) and takes the aligned additive mask;
SDPA gets the same options as eager (impls._torch.sdpa_options); FlexAttention takes
`enable_gqa=True` and a mask_mod shifted by Nk - Nq.
"""
from __future__ import annotations

import contextlib
import math
import warnings

from harness.constants import FEATURE_BOTTOM_RIGHT, FEATURE_KV_HEADS
from harness.measure.timer import time_once
from harness.problem.inputs import causal_offset
from impls._torch import (TorchAdapter, causal_bias, device_reasons, naive_attention, prepared,
                          sdpa_options, to_device)
from impls.encoders import TorchEncoder

# torch's words when flex_attention runs outside torch.compile (its unfused, N x N path)
UNFUSED_WARNING = "flex_attention called without torch.compile"
BLOCK_SIZE = 128  # create_block_mask's default tile


def compile_static(fn):
    """`fn` under torch.compile (inductor, whole graph, static shapes), with nothing cached from
    an earlier case."""
    import torch

    torch.compiler.reset()
    return torch.compile(fn, fullgraph=True, dynamic=False)


def strict(close=None) -> contextlib.ExitStack:
    """Entered in `prepare`, left by `close`: a recompilation raises, and FlexAttention's
    unfused-fallback warning is raised as an error (the harness records `error`)."""
    import torch

    stack = contextlib.ExitStack()
    if close is not None:  # what was entered before is left last
        stack.callback(close)
    # one compiled entry per case; at the limit dynamo raises instead of running eager
    stack.enter_context(torch._dynamo.config.patch(recompile_limit=1,
                                                   fail_on_recompile_limit_hit=True))
    stack.enter_context(warnings.catch_warnings())
    warnings.filterwarnings("error", message=UNFUSED_WARNING)
    return stack


class CompiledKernel(TorchAdapter):
    """A kernel-level formula under torch.compile; subclasses give the eager function."""

    modes = ("fwd", "fwd_bwd")
    kernel_probe = "compiled"
    features = frozenset({FEATURE_KV_HEADS, FEATURE_BOTTOM_RIGHT})

    def function(self, case, q, k, v):
        """(fn, extra positional arguments after q, k, v), given the prepared q, k, v."""
        raise NotImplementedError

    def prepare(self, case, inputs):
        q, k, v = to_device(case, inputs)
        fn, extra = self.function(case, q, k, v)
        compiled = compile_static(fn)
        context = strict()
        return self.finish(case, lambda: compiled(q, k, v, *extra), context, inputs,
                           {"q": q, "k": k, "v": v})

    def finish(self, case, call, context, inputs, wrt, info=None):
        out = prepared(case, call, close=context.close, kernel="inductor", wrt=wrt, inputs=inputs)
        out.compiled, out.info = True, info
        return out


class CompiledNaive(CompiledKernel):
    name = "torch.compile.naive"
    description = "The textbook formula (torch.naive) under torch.compile (inductor)."

    def function(self, case, q, k, v):
        mask = causal_bias(case) if case.causal else None
        return naive_attention, (mask, 1.0 / math.sqrt(case.head_dim), case.group_size)


class CompiledSDPA(CompiledKernel):
    name = "torch.compile.sdpa"
    description = "scaled_dot_product_attention under torch.compile (inductor)."

    def function(self, case, q, k, v):
        import torch.nn.functional as F

        options = sdpa_options(case, q, k, v)

        def sdpa(q, k, v):
            return F.scaled_dot_product_attention(q, k, v, **options)

        return sdpa, ()


def causal_mod(offset: int):
    """The causal mask_mod (flex_attention has no causal flag of its own, so the alignment is
    this one's): query i sees keys j <= i + offset (0: top-left; Nk - Nq: bottom-right,
    harness.problem.inputs.causal_offset)."""
    def causal(b, h, q_idx, kv_idx):
        return q_idx + offset >= kv_idx

    return causal


class Flex(CompiledKernel):
    name = "torch.flex"
    description = ("FlexAttention (flex_attention under torch.compile), the causal mask as a "
                   "BlockMask built in prepare.")
    dtypes = ("float32", "bfloat16", "float16")  # inductor's CPU lowering takes no float64

    def library_reasons(self, case) -> list[str]:
        """Backward: torch is asked with an eager trial on one token (it refuses on some
        devices before computing anything)."""
        reasons = device_reasons(case)
        if reasons or case.mode != "fwd_bwd":
            return reasons
        import torch
        from torch.nn.attention.flex_attention import flex_attention

        q = torch.zeros(1, 1, 1, 16, device=case.device, requires_grad=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # eager on purpose: only torch's refusal matters
            try:
                flex_attention(q, q, q)
            except NotImplementedError as exc:
                said = " ".join(str(exc).split())
                return [f"flex_attention backward is not supported on {case.device} in torch "
                        f"{torch.__version__}: {said}"]
        return []

    def prepare(self, case, inputs):
        import torch
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        q, k, v = to_device(case, inputs)
        block_mask, info = None, None
        if case.causal:
            def sync():
                if case.device.startswith("cuda"):
                    torch.cuda.synchronize(case.device)

            mask_mod = causal_mod(causal_offset(case.seq_len, case.seq_len_kv, case.causal_align))
            block_mask, build_s = time_once(
                lambda: create_block_mask(mask_mod, None, None, case.seq_len, case.seq_len_kv,
                                          device=case.device, BLOCK_SIZE=BLOCK_SIZE), sync)
            computed = int(block_mask.kv_num_blocks.sum())
            if block_mask.full_kv_num_blocks is not None:
                computed += int(block_mask.full_kv_num_blocks.sum())
            tiles = math.ceil(case.seq_len / BLOCK_SIZE) * math.ceil(case.seq_len_kv / BLOCK_SIZE)
            info = {"block_mask_build_s": build_s, "block_size": BLOCK_SIZE,
                    "block_mask_sparsity": 1.0 - computed / tiles}
        compiled = compile_static(flex_attention)
        context = strict()
        gqa = case.kv_heads != case.heads  # query head h reads K/V head h // group, as the reference
        return self.finish(case, lambda: compiled(q, k, v, block_mask=block_mask, enable_gqa=gqa),
                           context, inputs, {"q": q, "k": k, "v": v}, info)


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


ADAPTERS = [CompiledNaive(), CompiledSDPA(), Flex(), CompiledEncoder()]
