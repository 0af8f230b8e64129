"""FlexAttention (`flex_attention` under torch.compile): every mask a `mask_mod`, every score
modifier a `score_mod`, the mask's block sparsity built in `prepare` and recorded.

flex_attention has no causal flag, so the alignment is the mask_mod's: query i sees keys
j <= i + offset (0 top-left; Nk − Nq bottom-right, with each sequence's real keys in a ragged
batch: harness.problem.inputs.query_positions), a window keeps the `window` most recent of
them, and a ragged batch keeps each sequence's real keys (and, padded, skips its padded query
rows: they are not checked). A packed batch is one sequence of B·documents end to end, masked
by document ids (FlexAttention's document mask). The score_mod applies the soft cap
(softcap·tanh(s/softcap)), ALiBi (−slope_h·|pos_i − j|) and the bias (a captured tensor,
read at each score's sequence, head, query and key), in the reference's order.

`Prepared.info` holds the BlockMask's build time, tile size and sparsity (the fraction of
Q×KV tiles it skips) and what its mask_mod and score_mod apply.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from harness.case import NO_BIAS, PACKED
from harness.constants import (FEATURE_ALIBI, FEATURE_BIAS, FEATURE_BOTTOM_RIGHT,
                               FEATURE_KV_HEADS, FEATURE_PACKED, FEATURE_PADDING, FEATURE_SOFTCAP,
                               FEATURE_WINDOW)
from harness.measure.timer import time_once
from harness.problem.inputs import causal_offset, key_valid_lengths, query_valid_lengths
from harness.problem.modifiers import alibi_slopes
from impls._masks import is_ragged, packing, parts
from impls._torch import device_reasons, prepared, to_device
from impls._compile import CompiledKernel, compile_static, strict

BLOCK_SIZE = 128  # create_block_mask's default tile


def causal_mod(offset: int):
    """The causal mask_mod of one alignment: query i sees keys j <= i + offset (0: top-left;
    Nk - Nq: bottom-right, harness.problem.inputs.causal_offset)."""
    def causal(b, h, q_idx, kv_idx):
        return q_idx + offset >= kv_idx

    return causal


class Positions:
    """Where each score sits, as torch index arithmetic inside a mask_mod or score_mod: each
    query's sequence and position in it, each key's, and the query's key position (pos_i,
    which the causal mask, the window and ALiBi are measured from).

    Padded layout: sequence b, query q_idx, key kv_idx, pos_i = q_idx + offset[b]. Packed: one
    sequence of documents; a token's document and its position in it are looked up in tensors
    built in `prepare`, and pos_i = local query + the document's offset."""

    def __init__(self, case, device):
        import torch

        self.packed = case.layout == PACKED
        as_tensor = lambda a: torch.as_tensor(np.asarray(a), device=device)  # noqa: E731
        if self.packed:
            pack = packing(case)
            self.pack = pack
            self.q_doc, self.k_doc = as_tensor(pack.documents()), as_tensor(pack.documents(True))
            self.q_local, self.k_local = as_tensor(pack.local()), as_tensor(pack.local(True))
            self.offset = as_tensor(pack.offsets)
            return
        valid = key_valid_lengths(case)
        self.k_len = None if valid is None else as_tensor(valid)
        q_valid = query_valid_lengths(case)
        self.q_len = None if q_valid is None else as_tensor(q_valid)
        offset = causal_offset(case.seq_len, case.seq_len_kv if valid is None else valid,
                               case.causal_align) if case.causal else 0
        self.offset = int(offset) if np.ndim(offset) == 0 else as_tensor(offset)

    def sequence(self, b, q_idx):
        return self.q_doc[q_idx] if self.packed else b

    def query(self, q_idx):
        return self.q_local[q_idx] if self.packed else q_idx

    def key(self, kv_idx):
        return self.k_local[kv_idx] if self.packed else kv_idx

    def query_position(self, b, q_idx):
        offset = self.offset
        if self.packed:
            return self.q_local[q_idx] + offset[self.q_doc[q_idx]]
        return q_idx + (offset[b] if not isinstance(offset, int) else offset)


def mask_mod(case, at: Positions):
    """The case's whole mask as one mask_mod, or None when every score is kept."""
    if not (case.causal or is_ragged(case) or at.packed):
        return None

    def keep(b, h, q_idx, kv_idx):
        j = at.key(kv_idx)
        out = q_idx >= 0  # all True, shaped as the indices
        if at.packed:
            out = out & (at.q_doc[q_idx] == at.k_doc[kv_idx])
        else:
            if at.k_len is not None:
                out = out & (kv_idx < at.k_len[b])
            if at.q_len is not None:  # a padded query row of a document: no work, not checked
                out = out & (q_idx < at.q_len[b])
        if case.causal:
            last = at.query_position(b, q_idx)
            out = out & (j <= last)
            if case.window:
                out = out & (j > last - case.window)
        return out

    return keep


def score_mod(case, at: Positions, inputs, device, dtype):
    """The case's soft cap, ALiBi and bias as one score_mod (flex passes it the scaled score),
    or None; the bias and the slopes are tensors it captures, in `dtype`."""
    import torch

    cap = float(case.softcap)
    slopes = (torch.as_tensor(alibi_slopes(case.heads), device=device, dtype=dtype)
              if case.alibi else None)
    bias = None
    if case.bias != NO_BIAS:
        bias = torch.as_tensor(inputs["bias"], device=device, dtype=dtype)
    if not (cap or case.alibi or bias is not None):
        return None
    per_sequence = case.bias == "batch_head"

    def modify(score, b, h, q_idx, kv_idx):
        if cap:
            score = torch.tanh(score / cap) * cap
        if slopes is not None:
            distance = torch.abs(at.query_position(b, q_idx) - at.key(kv_idx))
            score = score - slopes[h] * distance
        if bias is not None:
            seq = at.sequence(b, q_idx) if per_sequence else 0
            score = score + bias[seq, h, at.query(q_idx), at.key(kv_idx)]
        return score

    return modify


def score_mod_parts(case) -> str:
    said = [f"softcap {case.softcap:g}"] if case.softcap else []
    said += ["alibi"] if case.alibi else []
    said += [f"bias {case.bias}"] if case.bias != NO_BIAS else []
    return ", ".join(said)


class Flex(CompiledKernel):
    name = "torch.flex"
    description = ("FlexAttention (flex_attention under torch.compile): masks as a BlockMask "
                   "built in prepare, modifiers as a score_mod.")
    dtypes = ("float32", "bfloat16", "float16")  # inductor's CPU lowering takes no float64
    features = frozenset({FEATURE_KV_HEADS, FEATURE_BOTTOM_RIGHT, FEATURE_PADDING,
                          FEATURE_PACKED, FEATURE_WINDOW, FEATURE_ALIBI, FEATURE_BIAS,
                          FEATURE_SOFTCAP})

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

        at = Positions(case, case.device)
        # flex computes scores in float32 whatever the inputs' dtype: so do their terms
        mod_dtype = torch.float64 if case.dtype == "float64" else torch.float32
        modify = score_mod(case, at, inputs, case.device, mod_dtype)
        keep = mask_mod(case, at)
        if at.packed:
            pack = at.pack
            qkv = {n: pack.pack(inputs[n], keys=n != "q")[None] for n in ("q", "k", "v")}
            nq, nk = pack.q_total, pack.k_total
            run_inputs = dict(qkv)
            if case.mode == "fwd_bwd":
                run_inputs["dout"] = pack.pack(inputs["dout"])[None]
            q, k, v = to_device(case, run_inputs)
        else:
            nq, nk, run_inputs = case.seq_len, case.seq_len_kv, inputs
            q, k, v = to_device(case, inputs)
        info = {"score_mod": score_mod_parts(case) or None, "mask_mod": None}
        block_mask = None
        if keep is not None:
            def sync():
                if case.device.startswith("cuda"):
                    torch.cuda.synchronize(case.device)

            per_sequence = not at.packed and is_ragged(case)
            batch = case.batch if per_sequence else None
            block_mask, build_s = time_once(
                lambda: create_block_mask(keep, batch, None, nq, nk, device=case.device,
                                          BLOCK_SIZE=BLOCK_SIZE), sync)
            computed = int(block_mask.kv_num_blocks.sum())
            if block_mask.full_kv_num_blocks is not None:
                computed += int(block_mask.full_kv_num_blocks.sum())
            shape = block_mask.kv_num_blocks.shape  # (B or 1, 1, query tiles)
            tiles = shape[0] * shape[1] * shape[2] * math.ceil(nk / BLOCK_SIZE)
            info.update(block_mask_build_s=build_s, block_size=BLOCK_SIZE,
                        block_mask_sparsity=1.0 - computed / tiles,
                        mask_mod=", ".join(p for p in (parts(case, terms=False),
                                                       "documents" if at.packed else "")
                                           if p and p != "nothing"))
        if at.packed:
            info.update(packed_queries=nq, packed_keys=nk)
        compiled = compile_static(flex_attention)
        context = strict()
        gqa = case.kv_heads != case.heads  # query head h reads K/V head h // group, as the reference

        def call():
            return compiled(q, k, v, score_mod=modify, block_mask=block_mask, enable_gqa=gqa)

        out = prepared(case, call, close=context.close, kernel="inductor",
                       wrt={"q": q, "k": k, "v": v}, inputs=run_inputs,
                       info={n: x for n, x in info.items() if x is not None})
        out.compiled = True
        if at.packed:
            unpack_output(out, case, at.pack)
        return out


def unpack_output(out, case, pack) -> None:
    """The packed output (1, H, Tq, D) and gradients back in the reference's padded layouts,
    zeros on the padded positions (conversions only: the timed call stays packed)."""
    to_numpy = out.to_numpy
    out.to_numpy = lambda o: pack.unpack(to_numpy(o)[0], case.seq_len)
    sizes = {"q": (case.seq_len, False), "k": (case.seq_len_kv, True),
             "v": (case.seq_len_kv, True)}
    out.grads_to_numpy = lambda grads: {
        n: pack.unpack(to_numpy(g)[0], *sizes[n]) for n, g in grads.items()}


ADAPTERS = [Flex()]
