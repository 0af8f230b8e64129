"""xformers' `memory_efficient_attention`: its own dispatcher picks an operator (cutlass, flash, ck).

xformers works in (B, N, H, D); the transpose happens in `prepare`. When no operator fits a
case, xformers says why for each one; that explanation is the reason we report.

Grouped K/V heads go in xformers' 5-D layout (B, N, G, H, D): G = kv_heads groups of H =
group_size query heads each (query head h = g·H + i reads K/V head g = h // H, as the
reference), keys and values given one head per group and expanded (a stride-0 view, made in
`prepare`) across its H query heads, as xformers' docs ask (it does not broadcast). xformers
computes this layout forward only.

Masks are xformers' named types, each saying its alignment (`attn_bias`, chosen by `plan`):
causal `LowerTriangularMask` (top-left) or `LowerTriangularFromBottomRightMask`, with a window
`LowerTriangularFromBottomRightLocalAttentionMask`. Key padding and ragged KV caches keep the
padded tensors and read them as one row of sequences whose keys are padded
(`BlockDiagonalPaddedKeysMask`, causal `BlockDiagonalCausalWithOffsetPaddedKeysMask`, windowed
`BlockDiagonalCausalLocalAttentionPaddedKeysMask`, all bottom-right per sequence): a reshape,
no copy. A packed batch is the block-diagonal family over the sequences' lengths
(`BlockDiagonalMask`, `BlockDiagonalCausalMask` top-left, `...FromBottomRightMask`, and their
local-attention forms for a window). ALiBi, a bias, and masks no named type says (a ragged
square batch, top-left causal on padded keys, a top-left window on a rectangle) go in as one
dense tensor bias, -inf where a score is not kept. xformers has no soft cap, and no tensor bias
on a packed batch.
"""
from __future__ import annotations

import numpy as np

from harness.case import BOTTOM_RIGHT, PACKED
from harness.constants import (FEATURE_ALIBI, FEATURE_BIAS, FEATURE_BOTTOM_RIGHT,
                               FEATURE_KV_HEADS, FEATURE_PACKED, FEATURE_PADDING, FEATURE_SOFTCAP,
                               FEATURE_WINDOW, install_command)
from harness.problem.inputs import key_valid_lengths, query_valid_lengths
from impls._masks import additive, has_score_terms, is_ragged, packing, trial_case
from impls._torch import TorchAdapter, device_reasons, prepared, tensor, to_device
from impls.base import TO_BNHD

# How q, k, v reach memory_efficient_attention: as the padded tensors; flattened to one row of
# B sequences (B·N tokens, keys padded: a reshape); packed end to end
PADDED, FLAT = "padded", "flat"
PACKED_BIAS_NOTE = ("xformers' block-diagonal masks (a packed batch) take no tensor bias: "
                    "layout = padded runs it with one")


def condense(message: str) -> str:
    """xformers' multi-line NotImplementedError as one line: each operator and why it cannot run."""
    operators: list[list[str]] = []
    current = None
    for line in message.splitlines():
        if "is not supported because" in line:
            current = [line.strip()]
            operators.append(current)
        elif current is not None and line[:1].isspace() and line.strip():
            current.append(line.strip())
        else:
            current = None
    if not operators:
        return " ".join(message.split())
    return "; ".join(f"{op[0]} {', '.join(op[1:])}".strip() for op in operators)


def causal_bias(case):
    """xformers' mask for a plain case: None, or the causal mask type of its alignment."""
    if not case.causal:
        return None
    from xformers.ops.fmha.attn_bias import LowerTriangularFromBottomRightMask, LowerTriangularMask

    if case.causal_align == BOTTOM_RIGHT:
        return LowerTriangularFromBottomRightMask()
    return LowerTriangularMask()


def plan(case) -> tuple[str, object]:
    """(layout, attn_bias) for the case: which of PADDED, FLAT, PACKED q, k, v go in as, and
    the named mask type (None: no mask; "tensor": the dense tensor bias). See the module
    docstring for the choice."""
    from xformers.ops.fmha import attn_bias as ab

    bottom_right = case.causal and case.seq_len != case.seq_len_kv and \
        case.causal_align == BOTTOM_RIGHT
    if case.layout == PACKED:
        pack = packing(case)
        q_len, k_len = pack.q_lengths.tolist(), pack.k_lengths.tolist()
        if not case.causal:
            return PACKED, ab.BlockDiagonalMask.from_seqlens(q_len, k_len)
        if bottom_right:
            mask = ab.BlockDiagonalCausalFromBottomRightMask.from_seqlens(q_len, k_len)
            return PACKED, (mask.make_local_attention_from_bottomright(case.window)
                            if case.window else mask)
        mask = ab.BlockDiagonalCausalMask.from_seqlens(q_len, k_len)
        return PACKED, mask.make_local_attention(case.window) if case.window else mask
    if has_score_terms(case) or query_valid_lengths(case) is not None:
        return PADDED, "tensor"
    if is_ragged(case):  # padded keys; every query real
        if case.causal and not bottom_right:
            return PADDED, "tensor"  # top-left on padded keys: no named type
        q_len = [case.seq_len] * case.batch
        k_len = key_valid_lengths(case).tolist()
        if not case.causal:
            return FLAT, ab.BlockDiagonalPaddedKeysMask.from_seqlens(q_len, case.seq_len_kv, k_len)
        if case.window:
            return FLAT, ab.BlockDiagonalCausalLocalAttentionPaddedKeysMask.from_seqlens_local(
                q_len, case.seq_len_kv, k_len, case.window)
        return FLAT, ab.BlockDiagonalCausalWithOffsetPaddedKeysMask.from_seqlens(
            q_len, case.seq_len_kv, k_len)
    if case.window:
        if case.seq_len != case.seq_len_kv and not bottom_right:
            return PADDED, "tensor"  # a top-left window on a rectangle: no named type
        return PADDED, ab.LowerTriangularFromBottomRightLocalAttentionMask(case.window)
    return PADDED, causal_bias(case)


def tensor_bias(case, inputs, grouped_heads: bool):
    """The dense additive bias (ALiBi, bias, -inf where not kept) of the case's dtype on its
    device, (B, H, Nq, Nk) or (B, G, H/G, Nq, Nk) for grouped heads, its rows stored
    8-aligned as xformers' kernels ask, broadcast dimensions expanded with stride 0."""
    bias = np.asarray(additive(case, inputs))
    bias = bias.reshape((1,) * (4 - bias.ndim) + bias.shape)
    nk = case.seq_len_kv
    aligned = np.zeros(bias.shape[:-1] + (-(-nk // 8) * 8,))
    aligned[..., :nk] = bias
    t = tensor(case, aligned)[..., :nk].expand(case.batch, case.heads, case.seq_len, nk)
    if grouped_heads:
        t = t.reshape(case.batch, case.kv_heads, case.group_size, case.seq_len, nk)
    return t


def grouped(q, k, v):
    """(B, N, H, D) queries and (B, N, G, D) keys and values in xformers' layout: as they are
    when G = H; else q (B, Nq, G, H/G, D), and k, v (B, Nk, G, 1, D) expanded to
    (B, Nk, G, H/G, D)."""
    b, nq, heads, d = q.shape
    kv_heads = k.shape[2]
    if kv_heads == heads:
        return q, k, v
    group = heads // kv_heads
    q = q.reshape(b, nq, kv_heads, group, d)
    k, v = (x.reshape(b, x.shape[1], kv_heads, 1, d).expand(b, x.shape[1], kv_heads, group, d)
            for x in (k, v))
    return q, k, v


def arranged(case, layout: str, inputs: dict, grouped_heads: bool) -> list:
    """q, k, v on the device in xformers' layout for `layout` (see `plan`)."""
    if layout == PACKED:
        pack = packing(case)
        # (H, T, D) -> (1, T, H, D)
        qkv = [tensor(case, np.ascontiguousarray(pack.pack(inputs[n], keys=n != "q")
                                                 .transpose(1, 0, 2)[None]))
               for n in ("q", "k", "v")]
    else:
        qkv = to_device(case, inputs, layout=TO_BNHD)
    if layout == FLAT:  # one row of B sequences: (B, N, H, D) -> (1, B·N, H, D), a view
        qkv = [x.reshape(1, -1, *x.shape[2:]) for x in qkv]
    return list(grouped(*qkv)) if grouped_heads else qkv


class XformersFMHA(TorchAdapter):
    name = "xformers"
    description = "xformers.ops.memory_efficient_attention, operator chosen by xformers' dispatcher."
    dtypes = ("float32", "bfloat16", "float16")  # no xformers operator computes in float64
    requires = ("torch", "xformers")
    install_hint = install_command("xformers")
    features = frozenset({FEATURE_KV_HEADS, FEATURE_BOTTOM_RIGHT, FEATURE_PADDING,
                          FEATURE_PACKED, FEATURE_WINDOW, FEATURE_ALIBI, FEATURE_BIAS})
    feature_notes = {FEATURE_SOFTCAP: "memory_efficient_attention has no soft-cap option"}

    def library_reasons(self, case) -> list[str]:
        """Ask xformers' dispatcher with zeros of the case's device, dtype, lengths, head_dim,
        layout (one sequence, one K/V head and its query group) and mask."""
        reasons = device_reasons(case)
        if reasons:
            return reasons
        try:
            import xformers.ops as xops
        except ImportError as exc:
            return [f"xformers cannot be imported: {exc}: {self.install_hint}"]
        if case.layout == PACKED and has_score_terms(case):
            return [f"{self.name} cannot add ALiBi or a bias to a packed batch: {PACKED_BIAS_NOTE}"]
        trial, inputs = trial_case(case)
        for n, kv in (("q", False), ("k", True), ("v", True)):
            inputs[n] = np.zeros((1, 1 if kv else trial.heads,
                                  case.seq_len_kv if kv else case.seq_len, case.head_dim))
        layout, bias = plan(trial)
        qkv = arranged(trial, layout, inputs, trial.kv_heads != trial.heads)
        if isinstance(bias, str):
            bias = tensor_bias(trial, inputs, trial.kv_heads != trial.heads)
        try:
            xops.memory_efficient_attention(*qkv, attn_bias=bias)
        except NotImplementedError as exc:
            return [f"xformers says: {condense(str(exc))}"]
        return []

    def prepare(self, case, inputs):
        import xformers.ops as xops

        layout, bias = plan(case)
        gqa = case.kv_heads != case.heads
        q, k, v = arranged(case, layout, inputs, gqa)
        info = {"attn_bias": type(bias).__name__ if bias is not None else None,
                "layout": layout}
        if isinstance(bias, str):
            bias = tensor_bias(case, inputs, gqa)
            info["attn_bias"] = f"tensor {tuple(bias.shape)}"
        out = prepared(
            case,
            lambda: xops.memory_efficient_attention(q, k, v, attn_bias=bias),
            info={n: x for n, x in info.items() if x is not None},
        )
        to_numpy = out.to_numpy

        def to_reference(o):
            """(B or 1, N, [G, H/G,] H, D) in `layout` -> (B, H, Nq, D), untimed."""
            arr = to_numpy(o)
            arr = arr.reshape(arr.shape[0], arr.shape[1], case.heads, case.head_dim)
            if layout == PACKED:
                return packing(case).unpack(arr[0].transpose(1, 0, 2), case.seq_len)
            if layout == FLAT:
                arr = arr.reshape(case.batch, case.seq_len, case.heads, case.head_dim)
            return arr.transpose(TO_BNHD)

        out.to_numpy = to_reference
        return out


ADAPTERS = [XformersFMHA()]
