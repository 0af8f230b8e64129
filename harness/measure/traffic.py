"""One bytes-moved model for every implementation, so GB/s figures are comparable: the memory
traffic the problem itself requires, FlashAttention's `bandwidth_fwd_bytes` convention.

Forward: Q, K, V read and O written, once each, in the case's dtype:
    itemsize · (Q + K + V + O) elements,
Q and O with the query heads, H · D per real query; K and V with the K/V heads, Hkv · D per
kept key (grouped-query attention reads a K/V head once for its whole group of query heads).
Real tokens only, as FlashInfer's benchmarks count a ragged batch: with key padding or a
decode's KV-cache lengths each sequence counts its real keys (and all its queries); in a ragged
prefill (square case with a length distribution) each document counts its real queries and
keys. A key counts when at least one real query of its sequence keeps it: its rows' kept
spans (`row_spans`, the reference's mask: causal with either alignment, a sliding window)
are contiguous and overlap, so their union is one span per sequence. A one-token decode with
a window of 128 over a 4096-key cache reads 128 keys; a full or square causal problem reads
every key; top-left causal with fewer queries than keys skips the keys past the last query.
An additive bias is read once more, in the case's dtype, over the kept score entries only:
each sequence's for a per-(batch, head) bias, their union over the batch, once, for a
per-head bias the batch shares. ALiBi's slopes and a soft cap are scalars (not counted).
Backward: Q, O, dO and the kept K and V read, dQ, dK and dV written, once each:
    itemsize · (4 · Q + 2 · K_kept + 2 · K_real) elements (Q, O, dO, dQ are Q-sized; dK and dV
are written over every real key, zeros where no query looks), plus the bias read once again
(the backward recomputes the scores), so fwd_bwd moves forward + backward. This is the
traffic the problem requires, not what any one implementation moves: scores written out by a
textbook implementation, or K and V re-read per query block by a fused one, come on top
(harness.analysis.roofline models those). Layers (mha, encoder) have no bytes model: what
their projections and intermediates move depends on the framework, so their bytes are None.
"""
from __future__ import annotations

import numpy as np

from harness.case import NO_BIAS
from harness.constants import ITEMSIZE


def query_counts(case) -> list[int]:
    """Real queries of each sequence of the batch (fewer than seq_len only in a ragged
    prefill)."""
    from harness.problem.inputs import query_valid_lengths

    valid = query_valid_lengths(case)
    if valid is None:
        return [case.seq_len] * case.batch
    return [int(n) for n in valid]


def query_elements(case) -> int:
    """Elements of Q (and of O, dO, dQ) over real queries: H · D · Σ queries per sequence."""
    return case.heads * case.head_dim * sum(query_counts(case))


def key_counts(case) -> list[int]:
    """Real (unpadded) keys of each sequence of the batch."""
    from harness.problem.inputs import key_valid_lengths

    valid = key_valid_lengths(case)
    if valid is None:
        return [case.seq_len_kv] * case.batch
    return [int(n) for n in valid]


def row_spans(case) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi), each (B, Nq) int64: query row i of sequence b keeps keys lo <= j < hi, the
    mask of `harness.problem.inputs.attention_keep` (causal with its alignment to each
    sequence's real keys, a window, key padding) as one span per row; a padded query row, or
    one whose position precedes every key, keeps none (lo == hi)."""
    from harness.problem.inputs import causal_offset

    keys = np.array(key_counts(case), dtype=np.int64)[:, None]
    rows = np.array(query_counts(case), dtype=np.int64)[:, None]
    i = np.arange(case.seq_len, dtype=np.int64)[None, :]
    if case.causal:
        end = i + 1 + causal_offset(case.seq_len, keys, case.causal_align)
        hi = np.clip(end, 0, keys)
        lo = np.clip(end - case.window, 0, keys) if case.window else np.zeros_like(hi)
    else:
        hi = np.broadcast_to(keys, (case.batch, case.seq_len))
        lo = np.zeros_like(hi)
    real = i < rows
    return np.where(real, lo, 0), np.where(real, hi, 0)


def kept_key_counts(case) -> list[int]:
    """Keys of each sequence that at least one of its real queries keeps. Each row keeps one
    span and consecutive rows' spans touch (they move by one key and are a window or more
    wide), so the union is the span from the lowest kept key to the highest."""
    lo, hi = row_spans(case)
    keeps = hi > lo
    top = np.where(keeps, hi, 0).max(axis=1)
    bottom = np.where(keeps, lo, np.iinfo(np.int64).max).min(axis=1)
    return [int(n) for n in np.maximum(top - bottom, 0)]


def key_elements(case) -> int:
    """Elements of K (and of V) read over kept keys: Hkv · D · Σ kept keys per sequence."""
    return case.kv_heads * case.head_dim * sum(kept_key_counts(case))


def key_gradient_elements(case) -> int:
    """Elements of dK (and of dV) written: Hkv · D · Σ real keys per sequence (a key no query
    keeps still gets its zero gradient)."""
    return case.kv_heads * case.head_dim * sum(key_counts(case))


def bias_elements(case) -> int:
    """Elements of the additive bias one pass reads (0 without one): H · the kept score
    entries of every sequence for "batch_head"; H · their union over the batch, row by row,
    for "head" (one bias the batch shares)."""
    if case.bias == NO_BIAS:
        return 0
    lo, hi = row_spans(case)
    if case.bias == "head":
        return case.heads * _union_per_row(lo, hi)
    return case.heads * int((hi - lo).sum())


def _union_per_row(lo: np.ndarray, hi: np.ndarray) -> int:
    """Σ over rows (axis 1) of the size of the union of the batch's spans (axis 0): spans taken
    in order of their start, each adds what lies past the furthest end before it."""
    order = np.argsort(lo, axis=0, kind="stable")
    lo, hi = np.take_along_axis(lo, order, 0), np.take_along_axis(hi, order, 0)
    hi = np.where(hi > lo, hi, 0)  # an empty span adds nothing and ends nothing
    reach = np.maximum.accumulate(hi, axis=0)
    before = np.vstack([np.zeros_like(reach[:1]), reach[:-1]])
    return int(np.maximum(hi - np.maximum(lo, before), 0).sum())


def forward_bytes(case) -> int:
    """Q and the kept K, V (and the bias) read and O written once each (the module
    docstring)."""
    return ITEMSIZE[case.dtype] * (2 * query_elements(case) + 2 * key_elements(case)
                                   + bias_elements(case))


def backward_bytes(case) -> int:
    """Q, O, dO, the kept K, V (and the bias) read and dQ, dK, dV written once each (the
    module docstring)."""
    return ITEMSIZE[case.dtype] * (4 * query_elements(case) + 2 * key_elements(case)
                                   + 2 * key_gradient_elements(case) + bias_elements(case))


def case_bytes(case) -> int | None:
    """Bytes one timed call of a kernel case moves, by its mode; None for a layer."""
    if case.level != "kernel":
        return None
    if case.mode == "fwd_bwd":
        return forward_bytes(case) + backward_bytes(case)
    return forward_bytes(case)


def gbps(nbytes: int | None, median_s: float | None) -> float | None:
    """GB/s (10⁹ bytes per second) of a call that moves `nbytes` in `median_s`."""
    if nbytes is None or not median_s:
        return None
    return nbytes / median_s / 1e9
