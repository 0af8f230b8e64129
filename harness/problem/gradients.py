"""Reference gradients in NumPy: the backward of attention, by hand, in float64 (the truth) or
naively in a lower dtype (the bar the tolerance is measured from, as for outputs).

The loss is L = sum(out · G) with a seeded G (`harness.inputs.grad_output`), the same for every
framework, so dL/d(out) = G and every gradient is non-trivial. NumPy only: this module runs in
the TensorFlow worker too, which must never import torch. tests/test_fwd_bwd.py checks it
against torch autograd in float64.

Backward of O = softmax(S) V, S = modified(scale · Q Kᵀ) + mask, per query-row chunk (P is
recomputed from Q and K, so memory stays bounded at long N, as in the forward):
    dV += Pᵀ dO        dP = dO Vᵀ        dS = P ∘ (dP − rowsum(dO ∘ O))
    dQ  = scale · dS' K                   dK += scale · dS'ᵀ Q
where dS' = dS through the modifiers (harness.problem.modifiers): ALiBi and the bias add a
constant (dS' = dS; the bias gets no gradient: it is an input constant), and soft-capping
s ↦ c·tanh(s/c) has derivative 1 − tanh²(s/c), so dS' = dS ∘ (1 − t²).
With grouped K/V (Hkv < H heads) the forward repeats K and V over each group of query heads
(reference.expand_kv), so dK and dV are the per-query-head ones summed over the group:
(B, Hkv, Nk, D), as K and V. A row the mask leaves without a key has P = 0 (output 0): it
passes no gradient (dQ = 0 there, nothing to dK or dV). So does a padded query row of a
ragged batch, whose upstream gradient is 0 (harness.problem.inputs.grad_output).
"""
from __future__ import annotations

import numpy as np
from array_api_compat import array_namespace, device

from harness.case import TOP_LEFT
from harness.problem.inputs import attention_keep, key_valid_lengths
from harness.problem.modifiers import PLAIN, ScoreMods, score_mods
from harness.problem.reference import (ROW_CHUNK, as_work, expand_kv, kept, modified_scores,
                                       naive_attention, round_to, softmax_shift, softmax_total,
                                       sum_kv_groups, work_dtype)


def attention_backward(q, k, v, out, dout, causal: bool, dtype: str = "float64",
                       key_valid=None, align: str = TOP_LEFT, mods: ScoreMods = PLAIN
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dq, dk, dv of `naive_attention(q, k, v, causal, dtype, key_valid, align, mods)` given
    dL/d(out); dk and dv have k's and v's heads (summed over each group of query heads).

    `out` is that forward's output (it gives rowsum(dO ∘ O) without storing P). Every stored
    intermediate is rounded to `dtype`, as `naive_attention` does.
    """
    xp = array_namespace(q, k, v, out, dout)
    q, k, v, out, dout = (as_work(xp, x, dtype) for x in (q, k, v, out, dout))
    kv_heads = k.shape[-3] if k.ndim >= 3 else None
    if q.ndim >= 3:
        k, v = expand_kv(xp, k, q.shape[-3]), expand_kv(xp, v, q.shape[-3])
    work, where = work_dtype(xp, dtype), device(q)
    scale = 1.0 / float(np.sqrt(q.shape[-1]))  # a Python float: products stay in `work`
    nq, nk = q.shape[-2], k.shape[-2]
    batch = tuple(np.broadcast_shapes(tuple(q.shape[:-2]), tuple(k.shape[:-2])))
    dq = xp.empty(batch + (nq, q.shape[-1]), dtype=work, device=where)
    dk = xp.zeros(batch + tuple(k.shape[-2:]), dtype=work, device=where)
    dv = xp.zeros(batch + tuple(v.shape[-2:]), dtype=work, device=where)
    kt = k.swapaxes(-1, -2)
    vt = v.swapaxes(-1, -2)
    for start in range(0, nq, ROW_CHUNK):
        rows = slice(start, min(start + ROW_CHUNK, nq))
        scores = round_to(q[..., rows, :] @ kt, dtype)
        scores, capped = modified_scores(xp, round_to(scores * scale, dtype), mods, dtype, nq,
                                         nk, rows, key_valid, align)
        scores = kept(xp, scores, attention_keep(nq, nk, causal, key_valid, rows, align,
                                                 mods.window))
        scores = scores - softmax_shift(xp, scores)
        p = xp.exp(scores)
        del scores
        p = round_to(p / softmax_total(xp, p), dtype)
        do = dout[..., rows, :]
        dv += p.swapaxes(-1, -2) @ do
        dp = round_to(do @ vt, dtype)
        delta = xp.sum(do * out[..., rows, :], axis=-1, keepdims=True)
        ds = round_to(p * (dp - delta), dtype)
        del p
        if capped is not None:  # through the cap: d(c·tanh(s/c))/ds = 1 − tanh²
            ds = round_to(ds * round_to(1 - capped * capped, dtype), dtype)
        del capped
        dq[..., rows, :] = round_to(round_to(ds @ k, dtype) * scale, dtype)
        dk += ds.swapaxes(-1, -2) @ q[..., rows, :]
    if kv_heads is not None:
        dk, dv = sum_kv_groups(xp, dk, kv_heads), sum_kv_groups(xp, dv, kv_heads)
    return dq, round_to(round_to(dk, dtype) * scale, dtype), round_to(dv, dtype)


def kernel_forward_backward(case, inputs, dtype: str = "float64"
                            ) -> tuple[np.ndarray, dict]:
    """Kernel level: the output and {q, k, v} gradients of the case's attention in `dtype`
    (its mask, real keys and modifiers), given dL/d(out) in inputs["dout"]."""
    q, k, v = inputs["q"], inputs["k"], inputs["v"]
    valid, mods = key_valid_lengths(case), score_mods(case, inputs)
    out = naive_attention(q, k, v, case.causal, dtype, valid, case.causal_align, mods)
    dq, dk, dv = attention_backward(q, k, v, out, inputs["dout"], case.causal, dtype, valid,
                                    case.causal_align, mods)
    return out, {"q": dq, "k": dk, "v": dv}
