"""What `keras.ops.dot_product_attention` is given on every Keras backend (impls/tf_keras.py on
TensorFlow, impls/keras_backends.py on JAX and torch): its mask and bias options, the features
it takes, and whether it can take the case's grouped K/V heads.

Keras takes keys and values with fewer heads than the queries, (B, S, K, H) against (B, T, N, H),
and repeats them itself (query head h reads K/V head h // (N / K)); some backends cannot in
some versions (Keras 3.15 on TensorFlow repeats only when K > 1, so K = 1 fails in its
einsum), so the library is asked with a one-token trial. Its `is_causal` is top-left aligned on
every backend (tests/test_adapters.py pins it), so a bottom-right case passes the aligned boolean
mask instead; so do key padding, a ragged batch and a window. ALiBi and a bias go in `bias`,
which then carries the masks too (-inf where a score is not kept): Keras 3.15 on torch takes a
`bias` or a `mask`, never both. The soft cap Keras takes only on JAX with a TPU.
"""
from __future__ import annotations

import re

import numpy as np

from harness.constants import (FEATURE_ALIBI, FEATURE_BIAS, FEATURE_BOTTOM_RIGHT,
                               FEATURE_KV_HEADS, FEATURE_PADDING, FEATURE_SOFTCAP, FEATURE_WINDOW)
from impls._masks import additive, has_score_terms, keep_mask, masks_scores

FEATURES = frozenset({FEATURE_KV_HEADS, FEATURE_BOTTOM_RIGHT, FEATURE_PADDING, FEATURE_WINDOW,
                      FEATURE_ALIBI, FEATURE_BIAS})
FEATURE_NOTES = {FEATURE_SOFTCAP: (
    "Keras 3.15's dot_product_attention takes attn_logits_soft_cap only on JAX with a TPU "
    "and raises ValueError on every other backend and device (keras/src/ops/nn.py)")}


def mask_options(case, inputs, to_backend) -> dict:
    """`is_causal` for no mask or a top-left causal one alone; a boolean `mask`, True where a
    score is kept, (B or 1, 1, Nq, Nk), for any other mask; with ALiBi or a bias, one float
    `bias` (B or 1, H or 1, Nq, Nk) holding them and the masks. Made once in `prepare` by
    `to_backend` (a NumPy array -> the backend's tensor on the case's device); a float64 case's
    bias is float64, any other's float32 (Keras casts it to the scores' dtype)."""
    if has_score_terms(case):
        dtype = np.float64 if case.dtype == "float64" else np.float32
        return {"bias": to_backend(np.ascontiguousarray(additive(case, inputs), dtype=dtype))}
    if masks_scores(case):
        keep = keep_mask(case)
        return {"mask": to_backend(np.ascontiguousarray(keep[None, None] if keep.ndim == 2
                                                        else keep))}
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
