"""Float64 reference outputs, and the tolerance policy that judges every output against them.

Tolerance policy (docs/method.md states it too): an implementation in dtype T is allowed
`TOLERANCE_FACTOR` times the maximum absolute error that a naive computation in T makes on the
same inputs (inputs rounded to T, fp32 accumulation, every stored intermediate rounded to T,
which is how CPU and GPU libraries compute low precision), and never less than an absolute
floor per dtype. This is the rule the FlashAttention and PyTorch SDPA test suites use: a kernel
may be as wrong as the textbook formula in its own precision, a small multiple for a different
summation order, and no more.

Gradients (mode fwd_bwd) follow the same rule, against the naive backward in the same dtype
(harness.problem.gradients, harness.problem.layers), with the floor scaled by the gradient's magnitude
(`bound(..., scaled=True)`). Gradients that pass through a ReLU are the exception: they are
judged on the norm of their error (`norm_bound`, which says why).

The formula (`naive_attention`, and harness.problem.gradients' backward) is written once for
any array namespace (array-api-compat): NumPy arrays on the CPU, or torch tensors on a GPU,
where the float64 truth of a long-sequence GPU case takes seconds instead of the CPU's hours
(harness.problem.truth decides where it runs).

The problem it defines: K and V may have fewer heads than Q (grouped-query attention, K/V
repeated along heads as Hugging Face's `repeat_kv` does, so query head h reads K/V head
h // (H / Hkv)); a causal mask is top-left or bottom-right aligned
(harness.problem.inputs.causal_keep), optionally a sliding window; the scores may be
soft-capped, and take ALiBi and an additive bias, in the order harness.problem.modifiers states
(`modified_scores`); and a query row the mask leaves without any key outputs 0
(`softmax_shift`). A naive computation in a low dtype rounds each modifier's result to it, as
an eager implementation storing every intermediate would.
"""
from __future__ import annotations

import numpy as np
from array_api_compat import array_namespace, device, is_torch_array

from harness.case import TOP_LEFT
from harness.problem.inputs import attention_keep, key_valid_lengths
from harness.problem.modifiers import PLAIN, ScoreMods, alibi_distances, score_mods

TOLERANCE_FACTOR = 4.0
ABS_FLOOR = {"float64": 1e-10, "float32": 1e-5, "float16": 1e-3, "bfloat16": 1e-2}
# Gradients through a ReLU are judged on their norm (see `norm_bound`), with this floor on
# ‖error‖ / ‖reference‖: float32 flips measured at N=4096, d_model 256 move it by 3e-4..6e-4.
REL_FLOOR = {"float64": 1e-9, "float32": 2e-3, "float16": 1e-2, "bfloat16": 3e-2}
ROW_CHUNK = 512  # query rows per step: bounds the reference's memory at long sequences


def round_to(x, dtype: str):
    """Round float32/64 values to `dtype` and return them as float32 (float64 stays float64).

    An array already in that dtype comes back as it is, not copied: callers never write into
    what they passed. A torch tensor is rounded by torch's own conversions (round to nearest,
    ties to even, as below) and stays on its device."""
    if is_torch_array(x):
        return _torch_round_to(x, dtype)
    if dtype == "float64":
        return np.asarray(x, dtype=np.float64)
    if dtype == "float32":
        return np.asarray(x, dtype=np.float32)
    if dtype == "float16":
        return x.astype(np.float16).astype(np.float32)
    if dtype == "bfloat16":
        bits = np.array(x, dtype=np.float32, order="C").view(np.uint32)  # a copy: worked in place
        rounding = bits >> 16  # round to nearest, ties to even
        rounding &= np.uint32(1)
        rounding += np.uint32(0x7FFF)
        bits += rounding
        bits &= np.uint32(0xFFFF0000)
        return bits.view(np.float32)
    raise ValueError(f"unknown dtype {dtype!r}")


def _torch_round_to(x, dtype: str):
    import torch

    if dtype in ("float64", "float32"):
        return x.to(getattr(torch, dtype))
    if dtype in ("float16", "bfloat16"):
        return x.to(getattr(torch, dtype)).to(torch.float32)
    raise ValueError(f"unknown dtype {dtype!r}")


def work_dtype(xp, dtype: str):
    """What a naive computation in `dtype` accumulates in: float64 for float64, else float32."""
    return xp.float64 if dtype == "float64" else xp.float32


def as_work(xp, x, dtype: str):
    """`x` rounded to `dtype`, in its working dtype (work_dtype)."""
    return xp.astype(round_to(x, dtype), work_dtype(xp, dtype), copy=False)


def kept(xp, scores, keep):
    """`scores` with what the mask `keep` (a NumPy boolean array, or None) drops set to -inf."""
    if keep is None:
        return scores
    return xp.where(xp.asarray(keep, device=device(scores)), scores, -xp.inf)


def expand_kv(xp, x, heads: int):
    """K or V of shape (..., Hkv, N, D) repeated to `heads` heads, each K/V head serving
    heads // Hkv consecutive query heads (Hugging Face's `repeat_kv`, torch SDPA's
    `enable_gqa`); `x` itself when it has `heads` heads already (or no head axis)."""
    if x.ndim < 3 or x.shape[-3] == heads:
        return x
    shape = tuple(x.shape)
    group, rest = divmod(heads, shape[-3])
    if rest:
        raise ValueError(f"{heads} query heads cannot share {shape[-3]} K/V heads evenly")
    wide = xp.broadcast_to(xp.expand_dims(x, axis=-3), shape[:-2] + (group,) + shape[-2:])
    return xp.reshape(wide, shape[:-3] + (heads,) + shape[-2:])


def sum_kv_groups(xp, x, kv_heads: int):
    """The adjoint of `expand_kv`: a gradient over the query heads (..., H, N, D) summed over
    each group of H // kv_heads query heads that shares a K/V head, (..., kv_heads, N, D)."""
    if x.ndim < 3 or x.shape[-3] == kv_heads:
        return x
    shape = tuple(x.shape)
    grouped = xp.reshape(x, shape[:-3] + (kv_heads, shape[-3] // kv_heads) + shape[-2:])
    return xp.sum(grouped, axis=-3)


def softmax_shift(xp, scores):
    """What a row softmax subtracts from masked `scores` (dropped entries -inf): each row's
    maximum, or 0 for a row that keeps no entry.

    Softmax is exp(scores - softmax_shift) / softmax_total. A row with no kept entry gets
    weights 0, so its output is 0 and it passes no gradient: FlashAttention's convention (a
    bottom-right causal mask with Nq > Nk leaves its first Nq - Nk rows without a key) where
    the textbook formula gives 0/0. A row with a kept entry is computed exactly as without
    this rule. Two helpers, not one softmax function, so callers keep working in place on the
    chunk's own arrays (a function holding its argument would keep one more chunk alive).
    """
    top = xp.max(scores, axis=-1, keepdims=True)
    return xp.where(top == -xp.inf, xp.zeros_like(top), top)


def softmax_total(xp, weights):
    """Each row's sum of exp(scores - softmax_shift), 1 for a row that keeps no entry (its
    weights are all 0, and stay 0). A row with a kept entry sums to at least exp(0) = 1."""
    total = xp.sum(weights, axis=-1, keepdims=True)
    return xp.where(total == 0, xp.ones_like(total), total)


def modified_scores(xp, scores, mods: ScoreMods, dtype: str, nq: int, nk: int, rows,
                    key_valid=None, align: str = TOP_LEFT):
    """(scores, t): the scaled scores of query `rows` (..., rows, Nk) soft-capped, plus the
    ALiBi term, plus the bias (harness.problem.modifiers gives the order), each step rounded
    to `dtype`; t = tanh(s / softcap) where the cap acts (its derivative is 1 − t², for the
    backward), else None. Masks are not applied here."""
    capped = None
    if mods.softcap:
        capped = round_to(xp.tanh(round_to(scores / mods.softcap, dtype)), dtype)
        scores = round_to(capped * mods.softcap, dtype)
    if mods.alibi is not None:
        work, where = work_dtype(xp, dtype), device(scores)
        # top-left positions do not depend on the key count: one (rows, Nk) for the batch
        dist = alibi_distances(nq, nk, key_valid if align != TOP_LEFT else None, align, rows)
        dist = xp.asarray(dist, dtype=work, device=where)
        slopes = xp.asarray(mods.alibi[:, None, None], dtype=work, device=where)
        scores = round_to(scores - round_to(slopes * dist, dtype), dtype)
    if mods.bias is not None:
        scores = round_to(scores + as_work(xp, mods.bias[..., rows, :], dtype), dtype)
    return scores, capped


def naive_attention(q, k, v, causal: bool, dtype: str = "float64", key_valid=None,
                    align: str = TOP_LEFT, mods: ScoreMods = PLAIN) -> np.ndarray:
    """softmax(modified(q kᵀ / √d) + mask) v, computed naively in `dtype` (see the module
    docstring).

    q: (B, H, Nq, D); k, v: (B, Hkv, Nk, D), H a multiple of Hkv (`expand_kv`). The mask keeps
    what `causal` (aligned by `align`), the window of `mods` and `key_valid` (the unpadded
    keys per sequence, (B,), or None) allow; a row that keeps no key outputs 0. `mods`
    (harness.problem.modifiers.ScoreMods) soft-caps and biases the scores first. Works over
    query-row chunks so a float64 reference at long N stays within memory.
    """
    xp = array_namespace(q, k, v)
    q, k, v = (as_work(xp, x, dtype) for x in (q, k, v))
    if q.ndim >= 3:
        k, v = expand_kv(xp, k, q.shape[-3]), expand_kv(xp, v, q.shape[-3])
    scale = 1.0 / float(np.sqrt(q.shape[-1]))
    nq, nk = q.shape[-2], k.shape[-2]
    out = xp.empty(tuple(q.shape[:-1]) + (v.shape[-1],), dtype=work_dtype(xp, dtype),
                   device=device(q))
    kt = k.swapaxes(-1, -2)
    for start in range(0, nq, ROW_CHUNK):
        rows = slice(start, min(start + ROW_CHUNK, nq))
        # each step in place on this chunk's own array: the same operations, fewer copies
        scores = round_to(q[..., rows, :] @ kt, dtype)
        scores *= scale  # a Python float: the product stays in the working dtype
        scores, _ = modified_scores(xp, round_to(scores, dtype), mods, dtype, nq, nk, rows,
                                    key_valid, align)
        scores = kept(xp, scores, attention_keep(nq, nk, causal, key_valid, rows, align,
                                                 mods.window))
        scores -= softmax_shift(xp, scores)
        weights = xp.exp(scores)
        del scores
        weights /= softmax_total(xp, weights)
        weights = round_to(weights, dtype)
        out[..., rows, :] = round_to(weights @ v, dtype)
    return out


def kernel_attention(case, inputs: dict, dtype: str = "float64",
                     mods: ScoreMods | None = None):
    """A kernel case's attention on `inputs` (q, k, v, and bias where the case has one),
    naively in `dtype`: its mask, real keys and modifiers (`mods`: the case's own unless
    given, as when one is switched off to see what it changes)."""
    mods = score_mods(case, inputs) if mods is None else mods
    return naive_attention(inputs["q"], inputs["k"], inputs["v"], case.causal, dtype,
                           key_valid_lengths(case), case.causal_align, mods)


def reference_output(q, k, v, causal: bool, key_valid=None, align: str = TOP_LEFT,
                     mods: ScoreMods = PLAIN) -> np.ndarray:
    """The float64 truth every implementation is compared with."""
    return naive_attention(q, k, v, causal, "float64", key_valid, align, mods)


def tolerance(q, k, v, causal: bool, dtype: str, reference: np.ndarray, key_valid=None,
              align: str = TOP_LEFT, mods: ScoreMods = PLAIN) -> float:
    """Absolute tolerance on max |out - reference| for an implementation computing in `dtype`."""
    if dtype == "float64":
        return ABS_FLOOR["float64"]
    naive = naive_attention(q, k, v, causal, dtype, key_valid, align, mods)
    return bound(naive, reference, dtype)


def bound(naive: np.ndarray, reference: np.ndarray, dtype: str, scaled: bool = False) -> float:
    """The policy in one place: TOLERANCE_FACTOR x the naive same-dtype error, floored.

    `scaled` multiplies the floor by max(1, max |reference|): gradients of weights sum over
    every token, so their magnitude grows with batch x seq_len and a fixed floor would judge
    large ones on round-off alone. Outputs keep the plain floor (they are O(1) by design).
    """
    floor = ABS_FLOOR[dtype]
    if scaled and reference.size:
        floor *= max(1.0, float(np.max(np.abs(reference))))
    if dtype == "float64":
        return floor
    if not naive.size:
        return floor
    err = float(np.max(np.abs(np.asarray(naive, dtype=np.float64) - reference)))
    return max(floor, TOLERANCE_FACTOR * err)


def norm_bound(naive: np.ndarray, reference: np.ndarray, dtype: str) -> float:
    """Tolerance on ‖g − reference‖ (Frobenius) for gradients that pass through a ReLU.

    Why not max |error|: ReLU's derivative jumps at 0, and a pre-activation within rounding of
    0 lands on either side depending on summation order. With millions of pre-activations
    (N=4096 tokens x 1024 units) a few always do: a correct float32 gradient then differs from
    the float64 one by O(1) in a few entries (0.9 in dW1, measured), which no element-wise
    bound can tell from a bug. In norm such flips are small (3e-4..6e-4 relative, measured)
    while real bugs (a wrong layout, a missing scale, a detached weight) are O(1). Bound:
    max(TOLERANCE_FACTOR x the naive same-dtype error's norm, REL_FLOOR x ‖reference‖,
    ABS_FLOOR x √size) — the last for gradients that are exactly 0 (the key bias's).
    """
    ref_norm = float(np.linalg.norm(reference))
    floor = max(REL_FLOOR[dtype] * ref_norm, ABS_FLOOR[dtype] * float(np.sqrt(reference.size)))
    if dtype == "float64":
        return floor
    err = float(np.linalg.norm(np.asarray(naive, dtype=np.float64) - reference))
    return max(floor, TOLERANCE_FACTOR * err)


def compare(out: np.ndarray, reference: np.ndarray) -> dict:
    """max_abs_err and rel_err (Frobenius norm of the difference over the reference's)."""
    out = np.asarray(out, dtype=np.float64)
    diff = out - reference
    ref_norm = float(np.linalg.norm(reference))
    norm_err = float(np.linalg.norm(diff))
    return {
        "max_abs_err": float(np.max(np.abs(diff))) if diff.size else 0.0,
        "rel_err": norm_err / ref_norm if ref_norm > 0 else norm_err,
        "norm_err": norm_err,
        "finite": bool(np.all(np.isfinite(out))),
    }
