"""Packed batches in PyTorch: SDPA on nested tensors (jagged layout), and FlashAttention's varlen
kernel (`torch.nn.attention.varlen.varlen_attn`). Both take only a packed batch: each
sequence's real tokens end to end (`impls._masks.Packing`, built in `prepare`), with the
offsets FlashAttention calls cu_seqlens; the output is unpacked to the reference's padded
layout (zeros on the padded rows) outside the timed call.

Causal masks in a packed batch are per sequence. Where a sequence has as many queries as keys
(the documents of a prefill) both alignments agree; where it has fewer (decode on ragged KV
caches, or key padding), FlashAttention's varlen kernel aligns bottom-right, torch's nested
SDPA passes `is_causal` to whichever backend it picks (on CUDA flash aligns bottom-right,
memory-efficient top-left), so it takes only one query per sequence at the bottom-right,
which keeps every real key: no mask at all.
"""
from __future__ import annotations

import warnings

import numpy as np

from harness.case import BOTTOM_RIGHT, TOP_LEFT
from harness.constants import (FEATURE_ALIBI, FEATURE_BIAS, FEATURE_BOTTOM_RIGHT, FEATURE_KV_HEADS,
                               FEATURE_PACKED, FEATURE_PADDING, FEATURE_SOFTCAP, FEATURE_WINDOW)
from impls._masks import packing
from impls._torch import TorchAdapter, device_reasons, prepared, tensor

PACKED_FEATURES = frozenset({FEATURE_PADDING, FEATURE_PACKED})
# why each library cannot take a feature: torch/nested/_internal/sdpa.py refuses any attn_mask
# on jagged tensors, and is_causal is the only other mask its call takes; varlen_attn's
# signature (torch/nn/attention/varlen.py) has no argument for a score modifier
NESTED_NO_MASK = ("torch 2.13's SDPA on jagged tensors refuses every attn_mask ('Masks are not "
                  "yet supported!'), and {what} needs one")
NESTED_NOTES = {
    FEATURE_KV_HEADS: ("torch 2.13's SDPA on jagged tensors passes no enable_gqa to its kernels "
                       "(its math path fails: 'For nested tensors, batch dimensions must have "
                       "the same sizes')"),
    FEATURE_WINDOW: NESTED_NO_MASK.format(what="a sliding window"),
    FEATURE_ALIBI: NESTED_NO_MASK.format(what="ALiBi's distance penalty"),
    FEATURE_BIAS: NESTED_NO_MASK.format(what="an additive bias"),
    FEATURE_SOFTCAP: ("scaled_dot_product_attention has no soft-cap argument, on nested tensors "
                      "as on dense ones"),
}
VARLEN_CALL = ("varlen_attn's call (q, k, v, cu_seq_q, cu_seq_k, max_q, max_k, scale, "
               "window_size, enable_gqa, seqused_k, block_table, num_splits) takes no {what}")
VARLEN_NOTES = {
    FEATURE_ALIBI: VARLEN_CALL.format(what="alibi_slopes (flash_attn's own varlen function does)"),
    FEATURE_BIAS: VARLEN_CALL.format(what="mask or bias"),
    FEATURE_SOFTCAP: VARLEN_CALL.format(what="softcap (flash_attn's own varlen function does)"),
}


def packed_call(case, pack, forward_of, inputs, info):
    """Pack q, k, v as (T, H, D) tensors (leaves in fwd_bwd), let `forward_of(q, k, v)` give
    the call returning the packed (Tq, H, D) output, and unpack output and gradients to the
    reference's layouts for the check."""
    grad = case.mode == "fwd_bwd"
    packed = {n: np.ascontiguousarray(pack.pack(inputs[n], keys=n != "q").transpose(1, 0, 2))
              for n in ("q", "k", "v")}
    q, k, v = (tensor(case, packed[n], grad=grad) for n in ("q", "k", "v"))
    run_inputs = None
    if grad:
        run_inputs = {"dout": np.ascontiguousarray(pack.pack(inputs["dout"]).transpose(1, 0, 2))}
    out = prepared(case, forward_of(q, k, v), wrt={"q": q, "k": k, "v": v}, inputs=run_inputs,
                   info=info)
    to_numpy = out.to_numpy
    sizes = {"q": (case.seq_len, False), "k": (case.seq_len_kv, True),
             "v": (case.seq_len_kv, True)}

    def unpacked(t, name="q"):
        return pack.unpack(to_numpy(t).transpose(1, 0, 2), *sizes[name])

    out.to_numpy = unpacked
    out.grads_to_numpy = lambda grads: {n: unpacked(g, n) for n, g in grads.items()}
    return out


def packed_info(pack) -> dict:
    return {"packed_queries": pack.q_total, "packed_keys": pack.k_total,
            "sequences": len(pack.q_lengths)}


class TorchNested(TorchAdapter):
    """`scaled_dot_product_attention` on nested tensors of the jagged layout: one (B, H, j, D)
    tensor over the packed tokens and their offsets, the dispatcher choosing the backend (on
    the CPU its math path; on CUDA flash, memory-efficient or cuDNN over cu_seqlens); the
    record's `kernel` says which ran."""

    name = "torch.sdpa.nested"
    description = ("PyTorch SDPA on nested tensors (jagged layout): a packed batch, the "
                   "backend chosen by torch's dispatcher.")
    kernel_probe = "sdpa"
    modes = ("fwd", "fwd_bwd")
    packed_only = True
    features = PACKED_FEATURES | {FEATURE_BOTTOM_RIGHT}
    feature_notes = NESTED_NOTES

    def library_reasons(self, case) -> list[str]:
        """The per-sequence causal alignment (see the module docstring), then a trial call on
        two short jagged sequences with the case's flags, where torch says why not."""
        reasons = device_reasons(case)
        if reasons:
            return reasons
        if self.causal(case) and not all(packing(case).q_lengths == packing(case).k_lengths):
            return [f"{self.name} cannot place a causal mask on sequences with fewer queries "
                    f"than keys: torch's nested SDPA passes is_causal to the backend it picks, "
                    f"which aligns it its own way (flash bottom-right, memory-efficient "
                    f"top-left); only square sequences or one query per sequence at the "
                    f"bottom-right are one problem"]
        import torch
        import torch.nn.functional as F

        dtype = getattr(torch, case.dtype)
        offsets = torch.tensor([0, 1, 3], device=case.device)
        values = torch.zeros(3, 1, 8, device=case.device, dtype=dtype)
        x = torch.nested.nested_tensor_from_jagged(values, offsets).transpose(1, 2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nested tensors' prototype-stage notice
            try:
                F.scaled_dot_product_attention(x, x, x, is_causal=self.causal(case))
            except RuntimeError as exc:
                said = " ".join(str(exc).split())
                why = (" (its math backend takes no is_causal for nested queries; the CUDA "
                       "kernels do)" if self.causal(case) else "")
                return [f"torch {torch.__version__}'s SDPA on nested tensors cannot run this "
                        f"case on {case.device}: {said}{why}"]
        return []

    @staticmethod
    def causal(case) -> bool:
        """Whether the call needs `is_causal`: not for one query per sequence at the
        bottom-right (it sees every real key of its sequence)."""
        return case.causal and not (case.causal_align == BOTTOM_RIGHT and case.seq_len == 1)

    def prepare(self, case, inputs):
        import torch
        import torch.nn.functional as F

        pack = packing(case)
        causal = self.causal(case)
        q_offsets = torch.as_tensor(pack.q_starts, device=case.device)
        k_offsets = torch.as_tensor(pack.k_starts, device=case.device)

        def forward_of(q, k, v):
            # the nested views over the packed values: metadata only, made here once
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                nq = torch.nested.nested_tensor_from_jagged(q, q_offsets).transpose(1, 2)
                nk = torch.nested.nested_tensor_from_jagged(k, k_offsets).transpose(1, 2)
                nv = torch.nested.nested_tensor_from_jagged(v, k_offsets).transpose(1, 2)

            def call():
                out = F.scaled_dot_product_attention(nq, nk, nv, is_causal=causal)
                return out.transpose(1, 2).values()  # (Tq, H, D): a view

            return call

        return packed_call(case, pack, forward_of, inputs, packed_info(pack))


class TorchVarlen(TorchAdapter):
    """`torch.nn.attention.varlen.varlen_attn`: FlashAttention's varlen kernel over cu_seqlens,
    CUDA only. Causal is its window (−1, 0), a sliding window (window − 1, 0), both aligned
    bottom-right per sequence as FlashAttention does."""

    name = "torch.varlen"
    description = ("torch.nn.attention.varlen.varlen_attn: FlashAttention's varlen kernel on a "
                   "packed batch (CUDA).")
    devices = ("cuda",)
    dtypes = ("float16", "bfloat16")  # FlashAttention's
    modes = ("fwd", "fwd_bwd")
    kernel_probe = "sdpa"  # aten::_flash_attention_forward names it
    packed_only = True
    features = PACKED_FEATURES | {FEATURE_KV_HEADS, FEATURE_BOTTOM_RIGHT, FEATURE_WINDOW}
    feature_notes = VARLEN_NOTES

    def library_reasons(self, case) -> list[str]:
        reasons = device_reasons(case)
        if reasons:
            return reasons
        try:
            from torch.nn.attention.varlen import varlen_attn  # noqa: F401
        except ImportError as exc:
            return [f"this torch has no varlen_attn ({exc}): torch 2.9 or later has it"]
        pack = packing(case)
        if (case.causal and case.causal_align == TOP_LEFT
                and not all(pack.q_lengths == pack.k_lengths)):
            return [f"{self.name} aligns a causal mask bottom-right in every sequence "
                    f"(FlashAttention's convention); this case is top-left with fewer queries "
                    f"than keys in a sequence: causal_align = bottom_right runs it"]
        return []

    def prepare(self, case, inputs):
        import torch
        from torch.nn.attention.varlen import varlen_attn

        pack = packing(case)
        window = (-1, -1)
        if case.causal:
            window = (case.window - 1, 0) if case.window else (-1, 0)
        cu_q = torch.as_tensor(pack.q_starts, device=case.device, dtype=torch.int32)
        cu_k = torch.as_tensor(pack.k_starts, device=case.device, dtype=torch.int32)
        max_q, max_k = int(pack.q_lengths.max()), int(pack.k_lengths.max())
        gqa = case.kv_heads != case.heads

        def forward_of(q, k, v):
            def call():
                return varlen_attn(q, k, v, cu_q, cu_k, max_q, max_k, window_size=window,
                                   enable_gqa=gqa)

            return call

        return packed_call(case, pack, forward_of, inputs, packed_info(pack))


ADAPTERS = [TorchNested(), TorchVarlen()]
