"""One FLOP model for every implementation, so TFLOP/s figures are comparable.

Forward: 4·D FLOPs per unmasked score entry per (batch, head) — 2·D for Q·Kᵀ and 2·D for P·V;
softmax and scaling are not counted. A full Nq×Nk problem has Nq·Nk entries; a causal one
counts exactly the entries its mask keeps, top-left aligned (query i sees keys j <= i), which
is Nq·(Nq+1)/2 when Nq == Nk. Backward is 2.5× forward (the FlashAttention benchmarks'
convention), so fwd_bwd counts 3.5× forward.
"""
from __future__ import annotations

BACKWARD_FACTOR = 2.5


def score_entries(seq_len: int, seq_len_kv: int, causal: bool) -> int:
    """Unmasked entries of one (Nq, Nk) score matrix."""
    if not causal:
        return seq_len * seq_len_kv
    # row i keeps min(i + 1, Nk) keys
    full_rows = max(0, seq_len - seq_len_kv)
    partial = min(seq_len, seq_len_kv)
    return partial * (partial + 1) // 2 + full_rows * seq_len_kv


def forward_flops(case) -> int:
    entries = score_entries(case.seq_len, case.seq_len_kv, case.causal)
    return 4 * case.head_dim * entries * case.batch * case.heads


def case_flops(case) -> int:
    """FLOPs of one timed call of the case, by its mode."""
    fwd = forward_flops(case)
    if case.mode == "fwd_bwd":
        return int(fwd * (1 + BACKWARD_FACTOR))
    return fwd


def tflops(flops: int, median_s: float | None) -> float | None:
    if not median_s:
        return None
    return flops / median_s / 1e12
