"""Seeded float64 inputs, generated once per problem so every implementation sees the same numbers.

Adapters convert these arrays to their own framework, dtype, device and layout in `prepare`.
"""
from __future__ import annotations

import zlib

import numpy as np


def problem_seed(case) -> int:
    """A seed that depends on the problem (shape, mask, suite seed) but not on impl or dtype."""
    return zlib.crc32(repr(case.problem_key).encode()) ^ (case.seed * 0x9E3779B1 % 2**32)


def kernel_inputs(case) -> dict[str, np.ndarray]:
    """q: (B, H, Nq, D); k, v: (B, H, Nk, D); standard normal, float64."""
    rng = np.random.default_rng(problem_seed(case))
    b, h, d = case.batch, case.heads, case.head_dim
    return {
        "q": rng.standard_normal((b, h, case.seq_len, d)),
        "k": rng.standard_normal((b, h, case.seq_len_kv, d)),
        "v": rng.standard_normal((b, h, case.seq_len_kv, d)),
    }


def causal_keep(nq: int, nk: int) -> np.ndarray:
    """Boolean (Nq, Nk) mask of kept scores, top-left aligned: query i sees keys j <= i.

    This is `torch.nn.functional.scaled_dot_product_attention(is_causal=True)`'s convention,
    and xformers' LowerTriangularMask's; for Nq == Nk every alignment agrees.
    """
    return np.tril(np.ones((nq, nk), dtype=bool))


def key_valid_lengths(case) -> np.ndarray | None:
    """Unpadded keys per sequence, (B,) int, or None without padding.

    `case.padding` is the fraction of padded keys of the first sequence; sequence b pads
    ⌊padding · Nk · (B - b) / B + ½⌋ keys at its end, so sequences of a batch differ (a mask
    applied to the wrong sequence shows). Every sequence keeps at least one key, so no query
    row is ever fully masked (its softmax would be 0/0).
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


def attention_keep(nq: int, nk: int, causal: bool, key_valid=None, rows=slice(None)):
    """Boolean mask of kept scores for query `rows`, broadcastable to (B, H, rows, Nk); None
    when everything is kept. Causal is top-left aligned (see `causal_keep`)."""
    keep = causal_keep(nq, nk)[rows] if causal else None
    if key_valid is not None:
        pad = (np.arange(nk)[None, :] < np.asarray(key_valid)[:, None])[:, None, None, :]
        keep = pad if keep is None else pad & keep
    return keep


def case_keep(case) -> np.ndarray | None:
    """The whole kept-score mask of a case (causal and key padding), broadcastable to
    (B, H, Nq, Nk), or None."""
    return attention_keep(case.seq_len, case.seq_len_kv, case.causal, key_valid_lengths(case))


def grad_output(case, shape) -> np.ndarray:
    """dL/d(out) for the scalar loss L = sum(out · G): a seeded standard-normal G, float64.

    Drawn from a stream of its own, so a case's forward inputs do not depend on its mode.
    """
    rng = np.random.default_rng([problem_seed(case), 0x6A09E667])
    return rng.standard_normal(shape)
