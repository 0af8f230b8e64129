"""Score modifiers of a kernel problem, one small function each (attention-gym's `mods`), used by
the reference, the adapters and the tests alike.

The score of query i, key j, query head h, sequence b is built in this order:
    s = scale · q·k                                  scale = 1/√D
    s = softcap · tanh(s / softcap)                  if case.softcap (logit soft-capping)
    s += −slope_h · |pos_i − j|                      if case.alibi (`alibi_slopes`)
    s += bias[b or 0, h, i, j]                       if case.bias != "none" (inputs["bias"])
then the masks (causal with its alignment, the window, the real keys) and the softmax. pos_i is
query i's key position, i + causal_offset (harness.problem.inputs.query_positions): i top-left
(and whenever the mask is not causal, or the problem square), Nk − Nq + i bottom-right, with
Nk each sequence's real keys in a ragged batch, as FlashAttention's varlen kernels place it.
On kept causal keys |pos_i − j| = pos_i − j, the paper's bias. The window is a mask: each
query keeps keys pos_i − window < j <= pos_i (itself and the window − 1 before it).

Only q, k and v get gradients; the bias is a constant input. Modifiers add no FLOPs
(harness.measure.flops): they are O(1) per score entry against the 4·D of the products.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from harness.case import NO_BIAS, TOP_LEFT
from harness.problem.inputs import key_valid_lengths, query_positions


def alibi_slopes(heads: int) -> np.ndarray:
    """ALiBi's per-head slopes (Press et al., 2022), float64 (H,): for H a power of two the
    geometric sequence 2^(−8k/H), k = 1..H; otherwise the slopes of the closest smaller power
    of two P, then every other slope of 2P (its odd k) for the remaining H − P heads, the
    paper's `get_slopes`."""
    if heads < 1:
        raise ValueError(f"ALiBi needs at least one head, not {heads}")
    power = 2 ** int(math.floor(math.log2(heads)))
    slopes = [2.0 ** (-8.0 * k / power) for k in range(1, power + 1)]
    if power != heads:
        slopes += [2.0 ** (-8.0 * k / (2 * power)) for k in range(1, 2 * power + 1, 2)]
    return np.array(slopes[:heads], dtype=np.float64)


@dataclass(frozen=True, eq=False)
class ScoreMods:
    """The modifiers one naive computation applies (harness.problem.reference): `window` (0:
    none), `softcap` (0: none), `alibi` (the slopes, (H,), or None) and `bias` (an array of the
    computation's namespace broadcastable to (B, H, Nq, Nk), or None). The default is the
    plain problem."""

    window: int = 0
    softcap: float = 0.0
    alibi: np.ndarray | None = None
    bias: object = None


PLAIN = ScoreMods()


def score_mods(case, inputs: dict) -> ScoreMods:
    """The case's modifiers, the bias taken from `inputs` (moved to wherever they are)."""
    return ScoreMods(window=case.window, softcap=float(case.softcap),
                     alibi=alibi_slopes(case.heads) if case.alibi else None,
                     bias=inputs["bias"] if case.bias != NO_BIAS else None)


def alibi_distances(nq: int, nk: int, key_valid=None, align: str = TOP_LEFT,
                    rows=slice(None)) -> np.ndarray:
    """|pos_i − j| for query `rows` and every key, float64, (rows, Nk) or (B, 1, rows, Nk) with
    `key_valid` (each sequence's real keys place a bottom-right query)."""
    return np.abs(query_positions(nq, nk, key_valid, align, rows) - np.arange(nk)).astype(
        np.float64)


def alibi_bias(case, rows=slice(None)) -> np.ndarray | None:
    """The ALiBi term −slope_h · |pos_i − j| of a case, float64, (1, H, rows, Nk), or
    (B, H, rows, Nk) when a ragged bottom-right batch places each sequence's queries; None
    without ALiBi. An additive bias an adapter may hand a library that takes one."""
    if not case.alibi:
        return None
    valid = key_valid_lengths(case) if case.causal_align != TOP_LEFT else None
    dist = alibi_distances(case.seq_len, case.seq_len_kv, valid, case.causal_align, rows)
    if dist.ndim == 2:
        dist = dist[None, None]
    return -alibi_slopes(case.heads)[:, None, None] * dist


def score_bias(case, inputs: dict) -> np.ndarray | None:
    """Everything a case adds to its scores after the cap, as one float64 tensor broadcastable
    to (B, H, Nq, Nk): the ALiBi term plus inputs["bias"]; None when it adds nothing. (A
    soft-capped case cannot fold it into a mask: the cap comes first.)"""
    terms = [t for t in (alibi_bias(case), inputs.get("bias") if case.bias != NO_BIAS else None)
             if t is not None]
    if not terms:
        return None
    return terms[0] if len(terms) == 1 else terms[0] + terms[1]
