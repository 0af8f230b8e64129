"""One bytes-moved model for every implementation, so GB/s figures are comparable: the memory
traffic the problem itself requires, FlashAttention's `bandwidth_fwd_bytes` convention.

Forward: Q, K, V read and O written, once each, in the case's dtype:
    itemsize · (Q + K + V + O) elements,
Q and O with the query heads, H · D per real query; K and V with the K/V heads, Hkv · D per
real key (grouped-query attention reads a K/V head once for its whole group of query heads).
Real tokens only, as FlashInfer's benchmarks count a ragged batch: with key padding or a
decode's KV-cache lengths each sequence counts its real keys (and all its queries); in a ragged
prefill (square case with a length distribution) each document counts its real queries and
keys. A causal mask or a window changes nothing here (keys no query sees are counted all the
same, as FlashAttention's benchmarks count them). An additive bias is read once more, in the
case's dtype: the real (query, key) block of each sequence for a per-(batch, head) bias, the
largest such block once for a per-head bias the batch shares. ALiBi's slopes and a soft cap
are scalars (not counted).
Backward: Q, K, V, O and dO read, dQ, dK and dV written, once each:
    itemsize · (4 · Q + 4 · K) elements (Q, O, dO, dQ are Q-sized; K, V, dK, dV K-sized),
plus the bias read once again (the backward recomputes the scores), so fwd_bwd moves forward
+ backward. This is the traffic the problem requires, not what any one implementation moves:
scores written out by a textbook implementation, or K and V re-read per query block by a fused
one, come on top (harness.analysis.roofline models those). Layers (mha, encoder) have no bytes
model: what their projections and intermediates move depends on the framework, so their
bytes are None.
"""
from __future__ import annotations

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


def key_elements(case) -> int:
    """Elements of K (and of V, dK, dV) over real keys: Hkv · D · Σ keys per sequence."""
    return case.kv_heads * case.head_dim * sum(key_counts(case))


def bias_elements(case) -> int:
    """Elements of the additive bias one pass reads (0 without one): H · Σ queries · keys of
    each sequence for "batch_head"; H · max queries · max keys for "head" (shared)."""
    if case.bias == NO_BIAS:
        return 0
    blocks = list(zip(query_counts(case), key_counts(case)))
    if case.bias == "head":
        return case.heads * max(q for q, _ in blocks) * max(k for _, k in blocks)
    return case.heads * sum(q * k for q, k in blocks)


def forward_bytes(case) -> int:
    """Q, K, V (and the bias) read and O written once each (the module docstring)."""
    return ITEMSIZE[case.dtype] * (2 * query_elements(case) + 2 * key_elements(case)
                                   + bias_elements(case))


def backward_bytes(case) -> int:
    """Q, K, V, O, dO (and the bias) read and dQ, dK, dV written once each (the module
    docstring)."""
    return ITEMSIZE[case.dtype] * (4 * query_elements(case) + 4 * key_elements(case)
                                   + bias_elements(case))


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
