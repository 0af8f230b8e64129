"""What adapters build, once in `prepare`, from a case's masks, score modifiers and ragged
lengths: NumPy arrays every framework converts, and the packing of a ragged batch.

The problem layer says what the scores are (harness.problem.modifiers: cap, ALiBi, bias, in that
order) and which are kept (harness.problem.inputs.case_keep: causal with its alignment, the
window, each sequence's real keys). An adapter that hands its library a mask or a bias takes
them from here, so no adapter re-derives an alignment.

Padded query rows of a ragged square batch (a document's queries past its length) are not
checked, but a softmax over a row that keeps nothing is NaN in most libraries (0/0), and a NaN
there would still reach dK and dV in a backward (0 · NaN). So the masks here let those rows
keep their sequence's real keys: a finite, unchecked output, exactly zero in what it passes back.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from harness.case import CONSTANT, NO_BIAS, TOP_LEFT
from harness.constants import (FEATURE_ALIBI, FEATURE_BIAS, FEATURE_BOTTOM_RIGHT,
                               FEATURE_KV_HEADS, FEATURE_PADDING, FEATURE_SOFTCAP, FEATURE_WINDOW)
from harness.problem.inputs import (case_keep, causal_offset, key_valid_lengths,
                                    query_valid_lengths)
from harness.problem.modifiers import score_bias

# What the textbook adapters (numpy, torch.naive, torch.compile.naive, jax.naive, tf.naive*)
# take: every modifier, computed densely (`additive`, a tanh for the cap). A packed batch has
# no textbook form: it is an input layout for kernels that skip the padding.
DENSE_FEATURES = frozenset({FEATURE_KV_HEADS, FEATURE_BOTTOM_RIGHT, FEATURE_PADDING,
                            FEATURE_WINDOW, FEATURE_ALIBI, FEATURE_BIAS, FEATURE_SOFTCAP})


def is_ragged(case) -> bool:
    """Whether some sequence of the batch has padded keys (or queries): lengths or padding."""
    return case.lengths != CONSTANT or case.padding > 0


def masks_scores(case) -> bool:
    """Whether a case needs more than SDPA-style `is_causal` (top-left) or nothing: key
    padding, a ragged batch, a window, or a bottom-right alignment."""
    return is_ragged(case) or case.window > 0 or (case.causal and case.causal_align != TOP_LEFT)


def keep_mask(case) -> np.ndarray | None:
    """Boolean kept-score mask broadcastable to (B, H, Nq, Nk) (True: kept), or None when
    every score is kept; `case_keep` with padded query rows keeping their sequence's real keys
    (the module docstring says why)."""
    keep = case_keep(case)
    q_valid = query_valid_lengths(case)
    if keep is None or q_valid is None:
        return keep
    real_row = np.arange(case.seq_len)[None, None, :, None] < q_valid[:, None, None, None]
    real_key = np.arange(case.seq_len_kv) < key_valid_lengths(case)[:, None, None, None]
    return np.where(real_row, keep, real_key)


def additive(case, inputs) -> np.ndarray | None:
    """Everything added to the capped scores as one float64 tensor broadcastable to
    (B, H, Nq, Nk): ALiBi, the bias, and -inf where a score is not kept; None when nothing is
    added."""
    terms = [score_bias(case, inputs)]
    keep = keep_mask(case)
    if keep is not None:
        terms.append(np.where(keep, 0.0, -np.inf))
    terms = [t for t in terms if t is not None]
    if not terms:
        return None
    return terms[0] if len(terms) == 1 else terms[0] + terms[1]


def has_score_terms(case) -> bool:
    """Whether a case adds to its scores (ALiBi or a bias), beyond masking them."""
    return case.alibi or case.bias != NO_BIAS


def describe(array: np.ndarray | None, what: str) -> str | None:
    """A mask or bias as `Prepared.info` names it: "bool (2, 1, 64, 64): what"."""
    if array is None:
        return None
    dtype = str(getattr(array, "dtype", "")).removeprefix("torch.")
    return f"{dtype} {tuple(array.shape)}: {what}"


def parts(case, masks: bool = True, terms: bool = True) -> str:
    """What a case's mask (`masks`) or added score terms (`terms`) hold, in words ("causal
    top_left, window 8, key padding, alibi")."""
    out = []
    if masks:
        out += [f"causal {case.causal_align}"] if case.causal else []
        out += [f"window {case.window}"] if case.window else []
        if is_ragged(case):
            out.append("key padding" if case.padding else f"lengths {case.lengths}")
    if terms:
        out += ["alibi"] if case.alibi else []
        out += [f"bias {case.bias}"] if case.bias != NO_BIAS else []
    return ", ".join(out) or "nothing"


@dataclass(frozen=True)
class Packing:
    """A ragged batch packed end to end: sequence b's q_lengths[b] real queries (and
    k_lengths[b] real keys) follow sequence b - 1's, with no padding between them.

    `q_starts`/`k_starts` are the cumulative offsets (B + 1,), FlashAttention's cu_seqlens;
    `offsets[b]` is how far right of its diagonal sequence b's causal mask keeps (query i of the
    sequence is key position i + offsets[b]: 0 top-left, its real keys minus its queries
    bottom-right), as harness.problem.inputs.query_positions places it."""

    q_lengths: np.ndarray
    k_lengths: np.ndarray
    offsets: np.ndarray

    @property
    def q_starts(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.q_lengths)]).astype(np.int64)

    @property
    def k_starts(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.k_lengths)]).astype(np.int64)

    @property
    def q_total(self) -> int:
        return int(self.q_lengths.sum())

    @property
    def k_total(self) -> int:
        return int(self.k_lengths.sum())

    def documents(self, keys: bool = False) -> np.ndarray:
        """Which sequence each packed token belongs to, (T,) int64."""
        lengths = self.k_lengths if keys else self.q_lengths
        return np.repeat(np.arange(len(lengths)), lengths)

    def local(self, keys: bool = False) -> np.ndarray:
        """Each packed token's position within its own sequence, (T,) int64."""
        starts = self.k_starts if keys else self.q_starts
        docs = self.documents(keys)
        return np.arange(len(docs)) - starts[docs]

    def pack(self, x: np.ndarray, keys: bool = False) -> np.ndarray:
        """(B, H, N, D) -> (H, T, D): each sequence's real tokens, end to end."""
        lengths = self.k_lengths if keys else self.q_lengths
        return np.concatenate([x[b, :, :n] for b, n in enumerate(lengths)], axis=1)

    def unpack(self, packed: np.ndarray, n: int, keys: bool = False) -> np.ndarray:
        """(H, T, D) -> (B, H, N, D), zeros on the padded positions."""
        lengths = self.k_lengths if keys else self.q_lengths
        starts = self.k_starts if keys else self.q_starts
        out = np.zeros((len(lengths), packed.shape[0], n, packed.shape[-1]), dtype=packed.dtype)
        for b, length in enumerate(lengths):
            out[b, :, :length] = packed[:, starts[b]:starts[b] + length]
        return out


def packing(case) -> Packing:
    """The case's batch as packed sequences: real queries (all Nq but for a ragged square
    batch) and real keys of each sequence."""
    b = case.batch
    q_lengths = query_valid_lengths(case)
    if q_lengths is None:
        q_lengths = np.full(b, case.seq_len, dtype=np.int64)
    k_lengths = key_valid_lengths(case)
    if k_lengths is None:
        k_lengths = np.full(b, case.seq_len_kv, dtype=np.int64)
    offsets = np.zeros(b, dtype=np.int64)
    if case.causal:
        offsets = offsets + causal_offset(q_lengths, k_lengths, case.causal_align)
    return Packing(q_lengths.astype(np.int64), k_lengths.astype(np.int64), offsets)


def trial_case(case):
    """The case as a library-reasons trial asks it (batch 1, one K/V head and its query group),
    and its inputs but q, k, v (a zero bias where the case has one): masks and biases of the
    same kinds as the real call's, on the trial's shapes."""
    trial = dataclasses.replace(case, batch=1, heads=case.group_size, kv_heads=1)
    inputs = {}
    if case.bias != NO_BIAS:
        inputs["bias"] = np.zeros((1, trial.heads, case.seq_len, case.seq_len_kv))
    return trial, inputs
