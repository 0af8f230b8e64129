"""Seeded float64 inputs, generated once per problem so every implementation sees the same numbers,
and the masks that say which scores a problem keeps.

Adapters convert these arrays to their own framework, dtype, device and layout in `prepare`.
"""
from __future__ import annotations

import zlib

import numpy as np

from harness.case import BOTTOM_RIGHT, TOP_LEFT


def problem_seed(case) -> int:
    """A seed that depends on the problem (shape, mask, suite seed) but not on impl or dtype."""
    return zlib.crc32(repr(case.problem_key).encode()) ^ (case.seed * 0x9E3779B1 % 2**32)


def kernel_inputs(case) -> dict[str, np.ndarray]:
    """q: (B, H, Nq, D); k, v: (B, Hkv, Nk, D) with Hkv = case.kv_heads (grouped-query
    attention: query head h reads K/V head h // case.group_size); standard normal, float64.

    Drawn in the order q, k, v from one stream, so a case whose kv_heads equals its heads gets
    exactly the numbers it got before grouped heads existed."""
    rng = np.random.default_rng(problem_seed(case))
    b, d = case.batch, case.head_dim
    return {
        "q": rng.standard_normal((b, case.heads, case.seq_len, d)),
        "k": rng.standard_normal((b, case.kv_heads, case.seq_len_kv, d)),
        "v": rng.standard_normal((b, case.kv_heads, case.seq_len_kv, d)),
    }


def causal_offset(nq: int, nk: int, align: str) -> int:
    """How far right of the diagonal a causal mask keeps: query i sees keys j <= i + offset.

    top_left: 0 (query i sees keys 0..i: `scaled_dot_product_attention(is_causal=True)`,
    xformers' LowerTriangularMask). bottom_right: Nk - Nq, query i is token Nk - Nq + i
    (decode, chunked prefill: FlashAttention, torch's `causal_lower_right`, xformers'
    LowerTriangularFromBottomRightMask). For Nq == Nk the two agree.
    """
    if align == TOP_LEFT:
        return 0
    if align == BOTTOM_RIGHT:
        return nk - nq
    raise ValueError(f"unknown causal alignment {align!r}")


def causal_keep(nq: int, nk: int, align: str = TOP_LEFT, rows=slice(None)) -> np.ndarray:
    """Boolean (Nq, Nk) mask of kept scores (its `rows` only): query i sees keys
    j <= i + causal_offset(nq, nk, align).

    Bottom-right with Nq > Nk leaves the first Nq - Nk rows with no key at all; the reference
    gives such a row output 0 (harness.problem.reference.softmax_shift says why).
    """
    offset = causal_offset(nq, nk, align)
    return np.arange(nk)[None, :] <= np.arange(nq)[rows][:, None] + offset


def key_valid_lengths(case) -> np.ndarray | None:
    """Unpadded keys per sequence, (B,) int, or None without padding.

    `case.padding` is the fraction of padded keys of the first sequence; sequence b pads
    ⌊padding · Nk · (B - b) / B + ½⌋ keys at its end, so sequences of a batch differ (a mask
    applied to the wrong sequence shows). Every sequence keeps at least one key, so padding
    alone never masks a whole query row (a bottom-right causal mask can: see `attention_keep`).
    """
    if not case.padding:
        return None
    b, nk = case.batch, case.seq_len_kv
    padded = [min(nk - 1, int(case.padding * nk * (b - i) / b + 0.5)) for i in range(b)]
    return np.array([nk - p for p in padded], dtype=np.int64)


def key_padding(case) -> np.ndarray | None:
    """Boolean (B, Nk): True where a key is padding (torch's key_padding_mask convention)."""
    valid = key_valid_lengths(case)
    if valid is None:
        return None
    return np.arange(case.seq_len_kv)[None, :] >= valid[:, None]


def attention_keep(nq: int, nk: int, causal: bool, key_valid=None, rows=slice(None),
                   align: str = TOP_LEFT):
    """Boolean mask of kept scores for query `rows`, broadcastable to (B, H, rows, Nk); None
    when everything is kept. Causal follows `align` (see `causal_keep`).

    With key padding (`key_valid`: unpadded keys per sequence), sequence b keeps keys
    j < key_valid[b], and a bottom-right causal mask is aligned to those real keys: query i
    is token key_valid[b] - Nq + i, as in a ragged batch of decode or chunked-prefill steps
    (FlashAttention's varlen kernels, xformers' BlockDiagonalCausalFromBottomRightMask).
    Top-left does not depend on the key count, so both readings agree for it. A row whose
    query precedes every real key keeps nothing: its output is 0 (see `causal_keep`).
    """
    if key_valid is None:
        return causal_keep(nq, nk, align, rows) if causal else None
    valid = np.asarray(key_valid)[:, None, None, None]  # (B, 1, 1, 1)
    j = np.arange(nk)
    keep = j < valid
    if causal:
        # each sequence's own key count places its mask
        keep = keep & (j <= np.arange(nq)[rows][:, None] + causal_offset(nq, valid, align))
    return keep


def case_keep(case) -> np.ndarray | None:
    """The whole kept-score mask of a case (causal with its alignment, and key padding),
    broadcastable to (B, H, Nq, Nk), or None."""
    return attention_keep(case.seq_len, case.seq_len_kv, case.causal, key_valid_lengths(case),
                          align=case.causal_align)


def grad_output(case, shape) -> np.ndarray:
    """dL/d(out) for the scalar loss L = sum(out · G): a seeded standard-normal G, float64.

    Drawn from a stream of its own, so a case's forward inputs do not depend on its mode.
    """
    rng = np.random.default_rng([problem_seed(case), 0x6A09E667])
    return rng.standard_normal(shape)
