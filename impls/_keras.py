"""What `keras.ops.dot_product_attention` is given on every Keras backend (impls/tf_keras.py on
TensorFlow, impls/keras_backends.py on JAX and torch): its mask options, and whether it can take
the case's grouped K/V heads.

Keras takes keys and values with fewer heads than the queries, (B, S, K, H) against (B, T, N, H),
and repeats them itself (query head h reads K/V head h // (N / K)); some backends cannot in
some versions (Keras 3.15 on TensorFlow repeats only when K > 1, so K = 1 fails in its
einsum), so the library is asked with a one-token trial. Its `is_causal` is top-left aligned on
every backend (tests/test_adapters.py pins it), so a bottom-right case passes the aligned boolean
mask instead.
"""
from __future__ import annotations

import re

import numpy as np

from harness.case import BOTTOM_RIGHT
from harness.problem.inputs import causal_keep


def mask_options(case, to_backend) -> dict:
    """`is_causal` for no mask or a top-left one; for bottom-right, `mask`: the aligned boolean
    (1, 1, Nq, Nk), True where a query sees a key, made once in `prepare` by `to_backend` (a
    NumPy array -> the backend's tensor on the case's device)."""
    if case.causal_align == BOTTOM_RIGHT:
        keep = causal_keep(case.seq_len, case.seq_len_kv, case.causal_align)
        return {"mask": to_backend(np.ascontiguousarray(keep[None, None]))}
    return {"is_causal": case.causal}


def grouping_reasons(keras, case, name: str) -> list[str]:
    """Why this Keras cannot take the case's grouped K/V heads (empty when it can, or when the
    case has none): a trial call on one token with the case's head counts."""
    if case.kv_heads == case.heads:
        return []
    q = np.zeros((1, 1, case.heads, case.head_dim), dtype=np.float32)
    kv = np.zeros((1, 1, case.kv_heads, case.head_dim), dtype=np.float32)
    try:
        keras.ops.dot_product_attention(q, kv, kv)
    except Exception as exc:  # the question asked; each backend raises its own error type
        said = " ".join(re.sub(r"\{\{.*?\}\}", "", str(exc)).split())[:300]  # TF's node name
        return [f"{name} cannot take kv_heads {case.kv_heads} of heads {case.heads}: Keras "
                f"{keras.__version__}'s dot_product_attention on {keras.backend.backend()} "
                f"says {type(exc).__name__}: {said}"]
    return []
