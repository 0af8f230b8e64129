"""xformers' `memory_efficient_attention`: its own dispatcher picks an operator (cutlass, flash, ck).

xformers works in (B, N, H, D); the transpose happens in `prepare`. When no operator fits a
case, xformers says why for each one; that explanation is the reason we report.

Grouped K/V heads go in xformers' 5-D layout (B, N, G, H, D): G = kv_heads groups of H =
group_size query heads each (query head h = g·H + i reads K/V head g = h // H, as the
reference), keys and values given one head per group and expanded (a stride-0 view, made in
`prepare`) across its H query heads, as xformers' docs ask (it does not broadcast). xformers
computes this layout forward only. A causal case is `LowerTriangularMask` (top-left) or
`LowerTriangularFromBottomRightMask`, the alignment said by the mask's type.
"""
from __future__ import annotations

from harness.case import BOTTOM_RIGHT
from harness.constants import FEATURE_BOTTOM_RIGHT, FEATURE_KV_HEADS, install_command
from impls._torch import TorchAdapter, device_reasons, prepared, to_device
from impls.base import TO_BNHD


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
    """xformers' mask for the case: None, or the causal mask type of its alignment."""
    if not case.causal:
        return None
    from xformers.ops.fmha.attn_bias import LowerTriangularFromBottomRightMask, LowerTriangularMask

    if case.causal_align == BOTTOM_RIGHT:
        return LowerTriangularFromBottomRightMask()
    return LowerTriangularMask()


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


class XformersFMHA(TorchAdapter):
    name = "xformers"
    description = "xformers.ops.memory_efficient_attention, operator chosen by xformers' dispatcher."
    dtypes = ("float32", "bfloat16", "float16")  # no xformers operator computes in float64
    requires = ("torch", "xformers")
    install_hint = install_command("xformers")
    features = frozenset({FEATURE_KV_HEADS, FEATURE_BOTTOM_RIGHT})

    def library_reasons(self, case) -> list[str]:
        """Ask xformers' dispatcher with zeros of the case's device, dtype, lengths, head_dim,
        layout (one K/V head and its query group) and mask."""
        reasons = device_reasons(case)
        if reasons:
            return reasons
        try:
            import xformers.ops as xops
        except ImportError as exc:
            return [f"xformers cannot be imported: {exc}: {self.install_hint}"]
        import torch

        options = {"device": case.device, "dtype": getattr(torch, case.dtype)}
        q = torch.zeros(1, case.seq_len, case.group_size, case.head_dim, **options)
        kv = torch.zeros(1, case.seq_len_kv, 1, case.head_dim, **options)
        try:
            xops.memory_efficient_attention(*grouped(q, kv, kv), attn_bias=causal_bias(case))
        except NotImplementedError as exc:
            return [f"xformers says: {condense(str(exc))}"]
        return []

    def prepare(self, case, inputs):
        import xformers.ops as xops

        q, k, v = grouped(*to_device(case, inputs, layout=TO_BNHD))
        bias = causal_bias(case)
        out = prepared(
            case,
            lambda: xops.memory_efficient_attention(q, k, v, attn_bias=bias),
            layout=TO_BNHD,
        )
        if case.kv_heads != case.heads:  # (B, Nq, G, H/G, D) back to (B, Nq, H, D), untimed
            to_numpy = out.to_numpy
            out.to_numpy = lambda o: to_numpy(o.reshape(o.shape[0], o.shape[1], case.heads, -1))
        return out


ADAPTERS = [XformersFMHA()]
