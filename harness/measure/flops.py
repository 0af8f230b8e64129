"""One FLOP model for every implementation, so TFLOP/s figures are comparable.

Attention core (every level): 4·D FLOPs per kept score entry per (batch, query head) —
2·D for Q·Kᵀ and 2·D for P·V; softmax and scaling are not counted, and neither are the score
modifiers (soft-capping, ALiBi, an additive bias: O(1) per entry against 4·D). Grouped K/V
heads change no FLOP (every query head still scores every key it keeps). A full Nq×Nk problem
has Nq·Nk entries; a causal one counts exactly the entries its mask keeps, row by row, with
its alignment (harness.problem.inputs.causal_keep): top-left, row i keeps min(Nk, i + 1) keys
(Nq·(Nq+1)/2 when Nq == Nk); bottom-right, min(Nk, max(0, Nk − Nq + i + 1)), so a one-token
decode step keeps all Nk and costs 4·D·Nk. A sliding window keeps, of those, the `window`
ending at the row's position (either alignment). A ragged batch counts real work only: with
key padding or a decode's KV-cache lengths, each sequence counts all its queries against its
real keys only (and a bottom-right mask is aligned to them, as the reference's is); in a ragged
prefill (square case with a length distribution) each document counts its own L·L problem
(query rows and keys below its length L). `padded_flops` is the same call on the padded shape,
what an implementation that computes the padding does: reports set useful against raw TFLOP/s.

Backward of the core is 2.5× its forward (the FlashAttention benchmarks' convention), so a
kernel's fwd_bwd counts 3.5× forward.

Layers add their matrix products, 2 FLOPs per multiply-add, over all B·N tokens:
  mha:      the q, k, v and output projections, 4 · 2·d_model² per token (d_model = H·D);
  encoder:  the mha's, plus the feed-forward, 2 · 2·d_model·d_ff per token
            (d_ff = ffn_mult·d_model).
Their backward is exactly 2× (one product for the input's gradient, one for the weight's), so
a layer's fwd_bwd counts 3.5× its attention core plus 3× its matmuls. Biases, LayerNorm,
activations and residual adds are not counted (they are O(N·d), not O(N·d²) or O(N²·d)).
"""
from __future__ import annotations

import dataclasses

from harness.case import CONSTANT, TOP_LEFT

BACKWARD_FACTOR = 2.5  # attention core
MATMUL_BACKWARD_FACTOR = 2.0  # a matrix product's backward: d(input) and d(weight)


def score_entries(seq_len: int, seq_len_kv: int, causal: bool, align: str = TOP_LEFT,
                  window: int = 0) -> int:
    """Kept entries of one (Nq, Nk) score matrix under a causal mask with alignment `align`
    (and a sliding `window`, 0 for none): row i keeps keys offset + i − window < j <=
    offset + i within [0, Nk) (offset 0 top-left, Nk − Nq bottom-right), that is
    clamp(i + 1 + offset, 0, Nk) − clamp(i + 1 + offset − window, 0, Nk), summed in closed
    form."""
    from harness.problem.inputs import causal_offset

    if not causal:
        return seq_len * seq_len_kv
    offset = causal_offset(seq_len, seq_len_kv, align)
    kept = _clamped_sum(offset + seq_len, seq_len_kv) - _clamped_sum(offset, seq_len_kv)
    if window:
        shifted = offset - window
        kept -= _clamped_sum(shifted + seq_len, seq_len_kv) - _clamped_sum(shifted, seq_len_kv)
    return kept


def _clamped_sum(x: int, cap: int) -> int:
    """sum of clamp(t, 0, cap) for t = 1..x (0 when x <= 0)."""
    if x <= 0:
        return 0
    if x <= cap:
        return x * (x + 1) // 2
    return cap * (cap + 1) // 2 + (x - cap) * cap


def _batch_entries(case) -> int:
    """Kept score entries summed over the batch (one query head), real work only."""
    from harness.problem.inputs import key_valid_lengths, query_valid_lengths

    keys = key_valid_lengths(case)
    if keys is None:
        return score_entries(case.seq_len, case.seq_len_kv, case.causal, case.causal_align,
                             case.window) * case.batch
    rows = query_valid_lengths(case)
    if rows is None:
        rows = [case.seq_len] * case.batch
    return sum(score_entries(int(r), int(n), case.causal, case.causal_align, case.window)
               for r, n in zip(rows, keys))


def attention_flops(case) -> int:
    """Forward FLOPs of the attention core: softmax(Q Kᵀ) V over every batch and query head."""
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
    """FLOPs of one timed call of the case, by its mode: the useful work."""
    if case.mode == "fwd_bwd":
        return int(attention_flops(case) * (1 + BACKWARD_FACTOR)
                   + matmul_flops(case) * (1 + MATMUL_BACKWARD_FACTOR))
    return forward_flops(case)


def padded_flops(case) -> int:
    """FLOPs of the same call on the padded shape (every sequence seq_len queries and
    seq_len_kv keys, no length distribution, no key padding; mask and window as the case's):
    what an implementation that computes the padding does. Equals `case_flops` for a batch
    that is not ragged."""
    return case_flops(dataclasses.replace(case, lengths=CONSTANT, padding=0.0))


def tflops(flops: int, median_s: float | None) -> float | None:
    if not median_s:
        return None
    return flops / median_s / 1e12
