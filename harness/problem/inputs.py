"""Seeded float64 inputs, generated once per problem so every implementation sees the same numbers,
the lengths of a ragged batch, and the masks that say which scores a problem keeps.

Adapters convert these arrays to their own framework, dtype, device and layout in `prepare`.

A kernel problem's inputs (`kernel_inputs`): "q" (B, H, Nq, D), "k" and "v" (B, Hkv, Nk, D),
and, for a case with an additive bias, "bias" ((1, H, Nq, Nk) for bias "head", (B, H, Nq, Nk)
for "batch_head"). A ragged batch (`case.lengths`, or key `padding`) keeps this padded layout:
padded positions hold random numbers like the rest, so an implementation that attends to them
shows; `key_valid_lengths` and `query_valid_lengths` say which positions are real.
"""
from __future__ import annotations

import zlib

import numpy as np

from harness.case import BOTTOM_RIGHT, CONSTANT, NO_BIAS, TOP_LEFT

# Soft-capped cases draw q as usual and multiply it by SOFTCAP_SCORE_RATIO x softcap, so a
# score q·k/√D is about normal with a standard deviation of that many caps: most scores reach
# the cap's non-linear range (tanh(1) = 0.76, not 1), as logits that need a cap do.
SOFTCAP_SCORE_RATIO = 1.0
# Stream ids of the draws other than q, k, v (each its own stream, so adding one never moves
# another's numbers).
GRAD_STREAM, LENGTHS_STREAM, BIAS_STREAM = 0x6A09E667, 0xBB67AE85, 0x3C6EF372
# The length distributions (`sequence_lengths`): log-normal weights of this shape for
# "longtail"; for "bimodal", modes at these fractions of N with this log-normal spread.
LONGTAIL_SIGMA = 1.5
BIMODAL_MODES = (1 / 8, 7 / 8)
BIMODAL_SPREAD = 0.1


def problem_seed(case) -> int:
    """A seed that depends on the problem (shape, mask, suite seed) but not on impl or dtype."""
    return zlib.crc32(repr(case.problem_key).encode()) ^ (case.seed * 0x9E3779B1 % 2**32)


def kernel_inputs(case) -> dict[str, np.ndarray]:
    """q: (B, H, Nq, D); k, v: (B, Hkv, Nk, D) with Hkv = case.kv_heads (grouped-query
    attention: query head h reads K/V head h // case.group_size); standard normal, float64.
    A soft-capped case's q is scaled by SOFTCAP_SCORE_RATIO x softcap (scores that reach the
    cap). With an additive bias, "bias": standard normal, (1, H, Nq, Nk) for "head" (one
    matrix per query head, shared by the batch) or (B, H, Nq, Nk) for "batch_head", from a
    stream of its own: a bias of O(1) visibly moves a softmax over O(1) scores.

    Drawn in the order q, k, v from one stream, so a case whose kv_heads equals its heads gets
    exactly the numbers it got before grouped heads existed, and a case without a modifier
    the numbers it got before modifiers existed."""
    rng = np.random.default_rng(problem_seed(case))
    b, d = case.batch, case.head_dim
    inputs = {
        "q": rng.standard_normal((b, case.heads, case.seq_len, d)),
        "k": rng.standard_normal((b, case.kv_heads, case.seq_len_kv, d)),
        "v": rng.standard_normal((b, case.kv_heads, case.seq_len_kv, d)),
    }
    if case.softcap:
        inputs["q"] *= SOFTCAP_SCORE_RATIO * case.softcap
    if case.bias != NO_BIAS:
        shared = 1 if case.bias == "head" else b
        bias_rng = np.random.default_rng([problem_seed(case), BIAS_STREAM])
        inputs["bias"] = bias_rng.standard_normal((shared, case.heads, case.seq_len,
                                                   case.seq_len_kv))
    return inputs


# --- ragged batches -----------------------------------------------------------------------------


def ragged_len(case) -> int:
    """N, the padded length a length distribution draws within: seq_len for a square case
    (prefill: each sequence is a document whose queries and keys are that long), seq_len_kv
    for a rectangular one (decode: each sequence's KV cache; its seq_len new queries are all
    real)."""
    return case.seq_len if case.seq_len == case.seq_len_kv else case.seq_len_kv


def token_budget(case) -> int:
    """Real tokens a length distribution gives the batch: half the padded ones, B·N/2 rounded
    half up, (B·N + 1) // 2 (never under B: every sequence has at least one token)."""
    return max(case.batch, (case.batch * ragged_len(case) + 1) // 2)


def sequence_lengths(case) -> np.ndarray | None:
    """Real length of each sequence, (B,) int64, each in [1, N] (N = `ragged_len`), summing to
    exactly `token_budget` (so distributions compare on equal work); None for "constant".

    Seeded by the problem (its own stream: q, k, v are not moved). The recipe:
    1. weights w, one per sequence: "uniform", uniform on [1, N]; "longtail", log-normal
       (μ 0, σ LONGTAIL_SIGMA): most short, a few clipped at N; "bimodal", a random half
       (rounded up) of the sequences long, 7N/8, the rest short, N/8 (BIMODAL_MODES), each
       times a log-normal factor of σ BIMODAL_SPREAD;
    2. lengths x = clip(c·w, 1, N), the one scale c with Σx = budget (bisection, 200 steps);
    3. integers: floor(x), then +1 to the entries below N with the largest fractional part
       (ties: the lower index) until the sum is the budget (or -1 to those above 1 with the
       smallest, should it overshoot).
    With B = 1 the one sequence is N/2 long (rounded up), whatever the distribution.
    """
    if case.lengths == CONSTANT:
        return None
    n, b = ragged_len(case), case.batch
    rng = np.random.default_rng([problem_seed(case), LENGTHS_STREAM])
    if case.lengths == "uniform":
        weights = rng.uniform(1.0, n, b)
    elif case.lengths == "longtail":
        weights = rng.lognormal(0.0, LONGTAIL_SIGMA, b)
    elif case.lengths == "bimodal":
        short, long = BIMODAL_MODES
        is_long = rng.permutation(b) < (b + 1) // 2
        weights = np.where(is_long, long * n, short * n) * rng.lognormal(0.0, BIMODAL_SPREAD, b)
    else:
        raise ValueError(f"unknown length distribution {case.lengths!r}")
    return _to_budget(weights, n, token_budget(case))


def _to_budget(weights: np.ndarray, n: int, total: int) -> np.ndarray:
    """Integers in [1, n] proportional to `weights` (clipped), summing to `total` (steps 2 and 3
    of `sequence_lengths`)."""
    lo, hi = 0.0, n / float(np.min(weights))  # at hi every weight reaches n
    for _ in range(200):
        mid = (lo + hi) / 2
        if np.clip(mid * weights, 1, n).sum() < total:
            lo = mid
        else:
            hi = mid
    x = np.clip(hi * weights, 1, n)
    lengths = np.floor(x).astype(np.int64)
    fraction = x - lengths
    short = total - int(lengths.sum())
    while short:
        if short > 0:
            order = np.argsort(-fraction, kind="stable")
            order = order[lengths[order] < n][:short]
            lengths[order] += 1
        else:
            order = np.argsort(fraction, kind="stable")
            order = order[lengths[order] > 1][:-short]
            lengths[order] -= 1
        fraction[order] = 0.0
        short = total - int(lengths.sum())
    return lengths


def key_valid_lengths(case) -> np.ndarray | None:
    """Real (unpadded) keys per sequence, (B,) int64, or None when every key is real.

    With a length distribution, the `sequence_lengths`. With `case.padding`, the fraction of
    padded keys of the first sequence; sequence b pads ⌊padding · Nk · (B - b) / B + ½⌋ keys at
    its end, so sequences of a batch differ (a mask applied to the wrong sequence shows).
    Every sequence keeps at least one key, so padding alone never masks a whole query row (a
    bottom-right causal mask can: see `attention_keep`).
    """
    if case.lengths != CONSTANT:
        return sequence_lengths(case)
    if not case.padding:
        return None
    b, nk = case.batch, case.seq_len_kv
    padded = [min(nk - 1, int(case.padding * nk * (b - i) / b + 0.5)) for i in range(b)]
    return np.array([nk - p for p in padded], dtype=np.int64)


def query_valid_lengths(case) -> np.ndarray | None:
    """Real query rows per sequence, (B,) int64, for a square case with a length distribution
    (a document's queries past its length are padding; their output is undefined and not
    checked); None otherwise (every query is real: key padding and decode pad keys only)."""
    if case.lengths == CONSTANT or case.seq_len != case.seq_len_kv:
        return None
    return sequence_lengths(case)


def real_query_rows(case) -> np.ndarray | None:
    """Boolean (B, 1, Nq, 1), True on real query rows (`query_valid_lengths`), broadcastable
    to an output or dQ; None when every row is real."""
    valid = query_valid_lengths(case)
    if valid is None:
        return None
    return (np.arange(case.seq_len)[None, :] < valid[:, None])[:, None, :, None]


def key_padding(case) -> np.ndarray | None:
    """Boolean (B, Nk): True where a key is padding (torch's key_padding_mask convention)."""
    valid = key_valid_lengths(case)
    if valid is None:
        return None
    return np.arange(case.seq_len_kv)[None, :] >= valid[:, None]


# --- masks ----------------------------------------------------------------------------------------


def causal_offset(nq, nk, align: str):
    """How far right of the diagonal a causal mask keeps: query i sees keys j <= i + offset.

    top_left: 0 (query i sees keys 0..i: `scaled_dot_product_attention(is_causal=True)`,
    xformers' LowerTriangularMask). bottom_right: Nk - Nq, query i is token Nk - Nq + i
    (decode, chunked prefill: FlashAttention, torch's `causal_lower_right`, xformers'
    LowerTriangularFromBottomRightMask). For Nq == Nk the two agree. `nk` may be an array
    (each sequence's real keys): the offsets come back as one.
    """
    if align == TOP_LEFT:
        return 0
    if align == BOTTOM_RIGHT:
        return nk - nq
    raise ValueError(f"unknown causal alignment {align!r}")


def query_positions(nq: int, nk: int, key_valid=None, align: str = TOP_LEFT,
                    rows=slice(None)) -> np.ndarray:
    """Which key position each query row of `rows` is: i + causal_offset, (rows, 1), or
    (B, 1, rows, 1) with `key_valid` (a bottom-right offset counts each sequence's real keys).
    The causal mask keeps keys up to it, a window the `window` keys ending at it, and ALiBi
    penalises the distance from it."""
    i = np.arange(nq)[rows][:, None]
    if key_valid is None:
        return i + causal_offset(nq, nk, align)
    valid = np.asarray(key_valid, dtype=np.int64)[:, None, None, None]  # (B, 1, 1, 1)
    return i + causal_offset(nq, valid, align)


def causal_keep(nq: int, nk: int, align: str = TOP_LEFT, rows=slice(None),
                window: int = 0) -> np.ndarray:
    """Boolean (Nq, Nk) mask of kept scores (its `rows` only): query i sees keys
    j <= i + causal_offset(nq, nk, align), and with a `window` only the last `window` of
    them, i + offset - window < j (itself included).

    Bottom-right with Nq > Nk leaves the first Nq - Nk rows with no key at all; the reference
    gives such a row output 0 (harness.problem.reference.softmax_shift says why).
    """
    last = query_positions(nq, nk, None, align, rows)
    j = np.arange(nk)[None, :]
    keep = j <= last
    if window:
        keep &= j > last - window
    return keep


def attention_keep(nq: int, nk: int, causal: bool, key_valid=None, rows=slice(None),
                   align: str = TOP_LEFT, window: int = 0):
    """Boolean mask of kept scores for query `rows`, broadcastable to (B, H, rows, Nk); None
    when everything is kept. Causal follows `align` (see `causal_keep`); a `window` (causal
    only) keeps each query's `window` most recent keys, itself included.

    With key padding (`key_valid`: real keys per sequence), sequence b keeps keys
    j < key_valid[b], and a bottom-right causal mask (and its window) is aligned to those real
    keys: query i is token key_valid[b] - Nq + i, as in a ragged batch of decode or
    chunked-prefill steps (FlashAttention's varlen kernels, xformers'
    BlockDiagonalCausalFromBottomRightMask). Top-left does not depend on the key count, so
    both readings agree for it. A row whose query precedes every real key keeps nothing: its
    output is 0 (see `causal_keep`). Padded query rows of a ragged square batch keep the
    sequence's real keys as any row does (their output is not checked).
    """
    if window and not causal:
        raise ValueError("a sliding window is causal: it keeps each query's most recent keys")
    if key_valid is None:
        return causal_keep(nq, nk, align, rows, window) if causal else None
    j = np.arange(nk)
    keep = j < np.asarray(key_valid)[:, None, None, None]  # (B, 1, 1, Nk)
    if causal:
        # each sequence's own key count places its mask
        last = query_positions(nq, nk, key_valid, align, rows)
        keep = keep & (j <= last)
        if window:
            keep &= j > last - window
    return keep


def case_keep(case) -> np.ndarray | None:
    """The whole kept-score mask of a case (causal with its alignment, window, key padding or
    lengths), broadcastable to (B, H, Nq, Nk), or None."""
    return attention_keep(case.seq_len, case.seq_len_kv, case.causal, key_valid_lengths(case),
                          align=case.causal_align, window=case.window)


def grad_output(case, shape) -> np.ndarray:
    """dL/d(out) for the scalar loss L = sum(out · G): a seeded standard-normal G, float64,
    zero on the padded query rows of a ragged square batch (`real_query_rows`: their output
    is undefined, and must pass nothing to dK, dV).

    Drawn from a stream of its own, so a case's forward inputs do not depend on its mode.
    """
    rng = np.random.default_rng([problem_seed(case), GRAD_STREAM])
    g = rng.standard_normal(shape)
    rows = real_query_rows(case) if len(shape) == 4 else None
    if rows is not None:
        g *= rows
    return g
