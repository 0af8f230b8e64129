"""The words every layer shares, defined once: what a case can be and what can become of it."""
from __future__ import annotations

LEVELS = ("kernel", "mha", "encoder")
MODES = ("fwd", "fwd_bwd")
NORMS = ("post", "pre")  # encoder blocks: LayerNorm after each residual (the seeds') or before
DTYPES = ("float64", "float32", "bfloat16", "float16")

# What became of a case. A failed case is one the user must look at; a timed one computed
# something, so it was measured (a mismatch is timed too, to show what the wrong answer costs).
STATUSES = ("ok", "unsupported", "mismatch", "oom", "timeout", "error")
FAILED_STATUSES = ("mismatch", "oom", "timeout", "error")
TIMED_STATUSES = ("ok", "mismatch")

# A configuration is a problem without its sequence length: one line of a seq_len sweep, one
# panel of a plot, one row of a table. CONFIG_FIELDS are the axes a reader sees; the later case
# fields (EXTRA_CONFIG_FIELDS) also split configurations wherever cases are matched.
CONFIG_FIELDS = ("level", "mode", "device", "dtype", "batch", "heads", "head_dim", "causal")
EXTRA_CONFIG_FIELDS = ("seed", "padding", "norm", "ffn_mult")
# Axes shown as columns only when they vary within a run.
OPTIONAL_AXES = ("level", "mode", "device", "batch", "heads", "head_dim")


def config_key(row) -> tuple:
    """The configuration of a Case or a record (dict): the sweep along which seq_len varies,
    per implementation, with square and rectangular (seq_len_kv != seq_len) problems apart."""
    get = row.get if isinstance(row, dict) else (lambda name: getattr(row, name))
    square = get("seq_len_kv") in (None, get("seq_len"))
    return (get("impl"), *(get(k) for k in CONFIG_FIELDS + EXTRA_CONFIG_FIELDS), square)


def install_command(extra: str) -> str:
    """How to install an optional framework: the project extra that pins it with the rest."""
    return f"pip install 'attnbench[{extra}]'"
