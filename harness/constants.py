"""The words every layer shares, defined once: what a case can be and what can become of it."""
from __future__ import annotations

LEVELS = ("kernel", "mha", "encoder")
MODES = ("fwd", "fwd_bwd")
NORMS = ("post", "pre")  # encoder blocks: LayerNorm after each residual (the seeds') or before
DTYPES = ("float64", "float32", "bfloat16", "float16")
ITEMSIZE = {"float64": 8, "float32": 4, "bfloat16": 2, "float16": 2}  # bytes per element

# What became of a case. A failed case is one the user must look at; a timed one computed
# something, so it was measured (a mismatch is timed too, to show what the wrong answer costs).
STATUSES = ("ok", "unsupported", "mismatch", "oom", "timeout", "error")
FAILED_STATUSES = ("mismatch", "oom", "timeout", "error")
TIMED_STATUSES = ("ok", "mismatch")

# Optional problem features an implementation declares it takes (impls.base.Adapter.features):
# grouped K/V heads (kv_heads != heads), a causal mask aligned bottom-right (Nq != Nk), a
# key-padding mask (padding > 0, or a ragged batch: lengths other than constant), a packed
# batch (layout packed), a sliding window, ALiBi, an additive score bias, logit soft-capping
FEATURE_KV_HEADS, FEATURE_BOTTOM_RIGHT, FEATURE_PADDING = "kv_heads", "bottom_right", "padding"
FEATURE_PACKED, FEATURE_WINDOW, FEATURE_ALIBI = "packed", "window", "alibi"
FEATURE_BIAS, FEATURE_SOFTCAP = "bias", "softcap"
FEATURES = (FEATURE_KV_HEADS, FEATURE_BOTTOM_RIGHT, FEATURE_PADDING, FEATURE_PACKED,
            FEATURE_WINDOW, FEATURE_ALIBI, FEATURE_BIAS, FEATURE_SOFTCAP)


def install_command(extra: str) -> str:
    """How to install an optional framework: the project extra that pins it with the rest."""
    return f"pip install 'attnbench[{extra}]'"
