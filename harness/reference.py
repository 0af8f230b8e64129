"""Float64 reference outputs, and the tolerance policy that judges every output against them.

Tolerance policy (the README states it too): an implementation in dtype T is allowed
`TOLERANCE_FACTOR` times the maximum absolute error that a naive computation in T makes on the
same inputs (inputs rounded to T, fp32 accumulation, every stored intermediate rounded to T,
which is how CPU and GPU libraries compute low precision), and never less than an absolute
floor per dtype. This is the rule the FlashAttention and PyTorch SDPA test suites use: a kernel
may be as wrong as the textbook formula in its own precision, a small multiple for a different
summation order, and no more.
"""
from __future__ import annotations

import numpy as np

from harness.inputs import causal_keep

TOLERANCE_FACTOR = 4.0
ABS_FLOOR = {"float64": 1e-10, "float32": 1e-5, "float16": 1e-3, "bfloat16": 1e-2}
ROW_CHUNK = 512  # query rows per step: bounds the reference's memory at long sequences


def round_to(x: np.ndarray, dtype: str) -> np.ndarray:
    """Round float32/64 values to `dtype` and return them as float32 (float64 stays float64)."""
    if dtype == "float64":
        return x.astype(np.float64)
    if dtype == "float32":
        return x.astype(np.float32)
    if dtype == "float16":
        return x.astype(np.float16).astype(np.float32)
    if dtype == "bfloat16":
        bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
        rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)  # round to nearest, ties to even
        return ((bits + rounding) & np.uint32(0xFFFF0000)).view(np.float32)
    raise ValueError(f"unknown dtype {dtype!r}")


def naive_attention(q, k, v, causal: bool, dtype: str = "float64") -> np.ndarray:
    """softmax(q kᵀ / √d + mask) v, computed naively in `dtype` (see the module docstring).

    Works over query-row chunks so a float64 reference at long N stays within memory.
    """
    work = np.float64 if dtype == "float64" else np.float32
    q, k, v = (round_to(x, dtype).astype(work, copy=False) for x in (q, k, v))
    scale = 1.0 / float(np.sqrt(q.shape[-1]))
    nq, nk = q.shape[-2], k.shape[-2]
    keep = causal_keep(nq, nk) if causal else None
    out = np.empty(q.shape[:-1] + (v.shape[-1],), dtype=work)
    kt = np.swapaxes(k, -1, -2)
    for start in range(0, nq, ROW_CHUNK):
        rows = slice(start, min(start + ROW_CHUNK, nq))
        scores = round_to(q[..., rows, :] @ kt, dtype)
        scores = round_to(scores * work(scale), dtype)
        if keep is not None:
            scores = np.where(keep[rows], scores, -np.inf)
        scores = scores - scores.max(axis=-1, keepdims=True)
        weights = np.exp(scores)
        weights = round_to(weights / weights.sum(axis=-1, keepdims=True), dtype)
        out[..., rows, :] = round_to(weights @ v, dtype)
    return out


def reference_output(q, k, v, causal: bool) -> np.ndarray:
    """The float64 truth every implementation is compared with."""
    return naive_attention(q, k, v, causal, "float64")


def tolerance(q, k, v, causal: bool, dtype: str, reference: np.ndarray) -> float:
    """Absolute tolerance on max |out - reference| for an implementation computing in `dtype`."""
    if dtype == "float64":
        return ABS_FLOOR["float64"]
    naive_err = float(np.max(np.abs(naive_attention(q, k, v, causal, dtype) - reference)))
    return max(ABS_FLOOR[dtype], TOLERANCE_FACTOR * naive_err)


def compare(out: np.ndarray, reference: np.ndarray) -> dict:
    """max_abs_err and rel_err (Frobenius norm of the difference over the reference's)."""
    out = np.asarray(out, dtype=np.float64)
    diff = out - reference
    ref_norm = float(np.linalg.norm(reference))
    return {
        "max_abs_err": float(np.max(np.abs(diff))) if diff.size else 0.0,
        "rel_err": float(np.linalg.norm(diff) / ref_norm) if ref_norm > 0 else float(np.linalg.norm(diff)),
        "finite": bool(np.all(np.isfinite(out))),
    }
