"""xformers' `memory_efficient_attention`: its own dispatcher picks an operator (cutlass, flash, ck).

xformers works in (B, N, H, D); the transpose happens in `prepare`. When no operator fits a
case, xformers says why for each one; that explanation is the reason we report.
"""
from __future__ import annotations

from harness.constants import install_command
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


class XformersFMHA(TorchAdapter):
    name = "xformers"
    description = "xformers.ops.memory_efficient_attention, operator chosen by xformers' dispatcher."
    dtypes = ("float32", "bfloat16", "float16")  # no xformers operator computes in float64
    requires = ("torch", "xformers")
    install_hint = install_command("xformers")

    def library_reasons(self, case) -> list[str]:
        """Ask xformers' dispatcher with zeros of the case's device, dtype, lengths and head_dim."""
        reasons = device_reasons(case)
        if reasons:
            return reasons
        try:
            import xformers.ops as xops
        except ImportError as exc:
            return [f"xformers cannot be imported: {exc}: {self.install_hint}"]
        import torch

        options = {"device": case.device, "dtype": getattr(torch, case.dtype)}
        q = torch.zeros(1, case.seq_len, 1, case.head_dim, **options)
        kv = torch.zeros(1, case.seq_len_kv, 1, case.head_dim, **options)
        bias = xops.LowerTriangularMask() if case.causal else None
        try:
            xops.memory_efficient_attention(q, kv, kv, attn_bias=bias)
        except NotImplementedError as exc:
            return [f"xformers says: {condense(str(exc))}"]
        return []

    def prepare(self, case, inputs):
        import xformers.ops as xops

        q, k, v = to_device(case, inputs, layout=TO_BNHD)
        bias = xops.LowerTriangularMask() if case.causal else None
        return prepared(
            case,
            lambda: xops.memory_efficient_attention(q, k, v, attn_bias=bias),
            layout=TO_BNHD,
        )


ADAPTERS = [XformersFMHA()]
