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
