"""Which kernel really ran: torch's SDPA dispatcher can silently fall back to the math path.

One extra call under torch.profiler, in a pass of its own, and the aten operator it launched
names the backend.
"""
from __future__ import annotations

# aten operator (as the profiler names it) -> backend, in the names SDPBackend uses, lowercased
SDPA_OPERATORS = {
    "aten::_scaled_dot_product_flash_attention_for_cpu": "flash_attention",
    "aten::_scaled_dot_product_flash_attention": "flash_attention",
    "aten::_scaled_dot_product_efficient_attention": "efficient_attention",
    "aten::_scaled_dot_product_cudnn_attention": "cudnn_attention",
    "aten::_scaled_dot_product_fused_attention_overrideable": "overrideable",
    "aten::_scaled_dot_product_attention_math": "math",
}


def torch_sdpa_kernel(prepared) -> str | None:
    """Run the call once under the profiler; the SDPA backend it dispatched to, or None."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        out = prepared.call()
        prepared.sync()
    del out
    seen = [SDPA_OPERATORS[e.name] for e in prof.events() if e.name in SDPA_OPERATORS]
    return seen[0] if seen else None
