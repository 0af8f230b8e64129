"""One FLOP model for every implementation, so TFLOP/s figures are comparable.

Attention core (every level): 4·D FLOPs per unmasked score entry per (batch, head) — 2·D for
Q·Kᵀ and 2·D for P·V; softmax and scaling are not counted. A full Nq×Nk problem has Nq·Nk
entries; a causal one counts exactly the entries its mask keeps, top-left aligned (query i sees
keys j <= i), which is Nq·(Nq+1)/2 when Nq == Nk; with key padding, each sequence counts only
its unpadded keys. Backward of the core is 2.5× its forward (the FlashAttention benchmarks'
convention), so a kernel's fwd_bwd counts 3.5× forward.

Layers add their matrix products, 2 FLOPs per multiply-add, over all B·N tokens:
  mha:      the q, k, v and output projections, 4 · 2·d_model² per token (d_model = H·D);
  encoder:  the mha's, plus the feed-forward, 2 · 2·d_model·d_ff per token
            (d_ff = ffn_mult·d_model).
Their backward is exactly 2× (one product for the input's gradient, one for the weight's), so
a layer's fwd_bwd counts 3.5× its attention core plus 3× its matmuls. Biases, LayerNorm,
activations and residual adds are not counted (they are O(N·d), not O(N·d²) or O(N²·d)).
"""
from __future__ import annotations

BACKWARD_FACTOR = 2.5  # attention core
MATMUL_BACKWARD_FACTOR = 2.0  # a matrix product's backward: d(input) and d(weight)


def score_entries(seq_len: int, seq_len_kv: int, causal: bool) -> int:
    """Unmasked entries of one (Nq, Nk) score matrix."""
    if not causal:
        return seq_len * seq_len_kv
    # row i keeps min(i + 1, Nk) keys
    full_rows = max(0, seq_len - seq_len_kv)
    partial = min(seq_len, seq_len_kv)
    return partial * (partial + 1) // 2 + full_rows * seq_len_kv


def _batch_entries(case) -> int:
    """Unmasked score entries summed over the batch (one head)."""
    from harness.problem.inputs import key_valid_lengths

    valid = key_valid_lengths(case)
    if valid is None:
        return score_entries(case.seq_len, case.seq_len_kv, case.causal) * case.batch
    return sum(score_entries(case.seq_len, int(n), case.causal) for n in valid)


def attention_flops(case) -> int:
    """Forward FLOPs of the attention core: softmax(Q Kᵀ) V over every batch and head."""
    return 4 * case.head_dim * _batch_entries(case) * case.heads


def matmul_flops(case) -> int:
    """Forward FLOPs of a layer's dense products (0 for kernels)."""
    if case.level == "kernel":
        return 0
    d, tokens = case.d_model, case.batch * case.seq_len
    flops = 4 * 2 * d * d * tokens
    if case.level == "encoder":
        flops += 2 * 2 * d * (case.ffn_mult * d) * tokens
    return flops


def forward_flops(case) -> int:
    return attention_flops(case) + matmul_flops(case)


def case_flops(case) -> int:
    """FLOPs of one timed call of the case, by its mode."""
    if case.mode == "fwd_bwd":
        return int(attention_flops(case) * (1 + BACKWARD_FACTOR)
                   + matmul_flops(case) * (1 + MATMUL_BACKWARD_FACTOR))
    return forward_flops(case)


def tflops(flops: int, median_s: float | None) -> float | None:
    if not median_s:
        return None
    return flops / median_s / 1e12
