"""Which kernel really ran: torch's SDPA dispatcher can silently fall back to the math path, and
nn.MultiheadAttention / nn.TransformerEncoderLayer take a fused fast path only when they can.

One extra call under torch.profiler, in a pass of its own, and the aten operators it launched
name what ran. Adapters declare which question applies (`Adapter.kernel_probe`); the harness
asks it, the same way for every adapter.
"""
from __future__ import annotations

# aten operator (as the profiler names it) -> backend, in the names SDPBackend uses, lowercased.
# torch's bottom-right `causal_lower_right` bias calls a backend's operator itself, without the
# scaled_dot_product_* wrapper: `_efficient_attention_forward` names the memory-efficient one;
# so do SDPA on nested tensors (on CUDA) and `varlen_attn` (over cu_seqlens).
SDPA_OPERATORS = {
    "aten::_scaled_dot_product_flash_attention_for_cpu": "flash_attention",
    "aten::_scaled_dot_product_flash_attention": "flash_attention",
    "aten::_scaled_dot_product_efficient_attention": "efficient_attention",
    "aten::_efficient_attention_forward": "efficient_attention",
    "aten::_flash_attention_forward": "flash_attention",  # varlen_attn, nested tensors on CUDA
    "aten::_cudnn_attention_forward": "cudnn_attention",
    "aten::_scaled_dot_product_cudnn_attention": "cudnn_attention",
    "aten::_scaled_dot_product_fused_attention_overrideable": "overrideable",
    "aten::_scaled_dot_product_attention_math": "math",
}
# the fused operators torch's layer fast path runs instead of its Python modules
FAST_PATH_OPERATORS = ("aten::_transformer_encoder_layer_fwd",
                       "aten::_native_multi_head_attention")
# what torch.compile's code leaves in a profile: the inductor-generated graph's call
COMPILED_MARKER = "## Call CompiledFxGraph"
PROBES = ("sdpa", "torch_module", "compiled")


def _operators(prepared) -> list[str]:
    """The names of the operators one call launched, in order."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        out = prepared.call()
        prepared.sync()
    del out
    return [e.name for e in prof.events()]


def name_kernel(probe: str, operators: list[str]) -> str | None:
    """What ran, from the operators: an SDPA backend; for a torch module also "fast_path"."""
    if probe == "sdpa":
        seen = [SDPA_OPERATORS[n] for n in operators if n in SDPA_OPERATORS]
        return seen[0] if seen else None
    if probe == "torch_module":
        names = set(operators)
        parts = ["fast_path"] if names & set(FAST_PATH_OPERATORS) else []
        parts += sorted({SDPA_OPERATORS[n] for n in names if n in SDPA_OPERATORS})
        return "+".join(parts) or None
    if probe == "compiled":  # torch.compile's code, or (eager fallback) none of it
        return "inductor" if any(n.startswith(COMPILED_MARKER) for n in operators) else None
    raise ValueError(f"unknown kernel probe {probe!r}: expected one of {', '.join(PROBES)}")


def kernel_that_ran(prepared, probe: str) -> str | None:
    """Run the call once under the profiler and name what ran (None: nothing recognisable)."""
    return name_kernel(probe, _operators(prepared))


def torch_sdpa_kernel(prepared) -> str | None:
    """The SDPA backend one call dispatched to, or None."""
    return kernel_that_ran(prepared, "sdpa")


def kernel_pass(adapter, prepared) -> dict:
    """The kernel field of a record, and an error when a pinned backend did not run: that would
    be a measurement of another kernel under the pinned one's name."""
    if adapter.kernel_probe is None:
        return {"kernel": prepared.kernel}
    ran = kernel_that_ran(prepared, adapter.kernel_probe) or "unknown"
    if prepared.kernel and ran != prepared.kernel:
        said = (f"pinned {prepared.kernel}, but the profiler saw {ran} run"
                if adapter.kernel_probe != "compiled" else
                "compiled by torch.compile, but the profiler saw no compiled graph run "
                "(an eager fallback)")
        return {"kernel": ran, "status": "error", "reason": said}
    return {"kernel": ran}
