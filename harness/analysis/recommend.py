"""Which attention to use for one problem, from measured records: the fastest implementation
that agrees with the float64 reference, was measured without disturbance and fits the memory
budget; how far ahead of the runner-up it is, and the probability that it is truly faster
(bootstrap over both sets of samples); a tie when they are within noise; and for every other
implementation why not.

Within noise: the bootstrap gives the winner less than P_FASTER probability of being faster, or
the two medians are within MIN_REL_UNCERTAINTY of each other (`series`: no figure is known
better than that). The answer is for a measured shape: the one asked for, or the nearest one of
the same kind (every configuration axis that is not a size: level, device, dtype, mask, mode,
padding...; harness.case) (distance: the sum of |log ratio| of the sizes: batch, heads, the
sequence lengths, head_dim), and it says so.
"""
from __future__ import annotations

import math

import numpy as np

from harness.analysis.series import MIN_REL_UNCERTAINTY
from harness.case import KIND_FIELDS, SIZE_FIELDS, axis_text, is_default, sort_key, value_of
from harness.units import MIB

SIZES = SIZE_FIELDS
KINDS = KIND_FIELDS
NAMED_KINDS = ("device", "dtype", "causal", "mode")  # always in a kind's text; others if set
P_FASTER = 0.95
RESAMPLES = 2000


class RecommendError(ValueError):
    """The records cannot answer the question; str() is one line."""


def _kind(x: dict) -> tuple:
    return tuple(bool(value_of(x, k)) if k == "causal" else value_of(x, k) for k in KINDS)


def kind_text(x: dict) -> str:
    """"cpu float32 causal fwd", plus any other kind axis away from its default."""
    parts = [axis_text(k, value_of(x, k)) for k in NAMED_KINDS]
    parts += [f"{k}={axis_text(k, value_of(x, k))}" for k in KINDS
              if k not in NAMED_KINDS and not is_default(x, k)]
    return " ".join(parts)


def shape_text(x: dict) -> str:
    n, nkv = value_of(x, "seq_len"), value_of(x, "seq_len_kv")
    kv = f" Nkv={nkv}" if nkv != n else ""
    return f"b{value_of(x, 'batch')} h{value_of(x, 'heads')} N={n}{kv} d{value_of(x, 'head_dim')}"


def _sizes(x: dict) -> tuple:
    return tuple(value_of(x, k) for k in SIZES)


def nearest_shape(records: list[dict], problem: dict) -> tuple[dict, float]:
    """(the measured shape nearest to `problem`, its distance; 0 is the problem itself)."""
    same = [r for r in records if _kind(r) == _kind(problem)]
    if not same:
        level = value_of(problem, "level")
        kinds = sorted({kind_text(r) for r in records if value_of(r, "level") == level})
        raise RecommendError(f"no {level} case was measured on {kind_text(problem)}: expected "
                             f"one of {', '.join(kinds) or f'none (the run has no {level} case)'}")

    def distance(r):
        return sum(abs(math.log(a / b)) for a, b in zip(_sizes(r), _sizes(problem)))
    best = min(same, key=lambda r: (distance(r), _sizes(r)))
    return {k: value_of(best, k) for k in (*SIZES, *KINDS)}, distance(best)


def p_faster(fast, slow, resamples: int = RESAMPLES, seed: int = 0) -> float | None:
    """Bootstrap probability that median(fast) < median(slow), each side resampled."""
    a = np.asarray([] if fast is None else fast, float)
    b = np.asarray([] if slow is None else slow, float)
    if len(a) < 2 or len(b) < 2:
        return None
    rng = np.random.default_rng(seed)
    ma = np.median(a[rng.integers(0, len(a), (resamples, len(a)))], axis=1)
    mb = np.median(b[rng.integers(0, len(b), (resamples, len(b)))], axis=1)
    return float(np.mean(ma < mb))


def _mib(nbytes) -> str:
    return f"{nbytes / MIB:.3g} MiB"


def rejection(r: dict, budget: int | None) -> str | None:
    """Why this record cannot be the answer; None when it can."""
    status, reason = r["status"], (r.get("reason") or "").strip()
    if status == "unsupported":
        return f"unsupported: {reason or 'no reason given'}"
    if status == "mismatch":
        err, tol = r.get("max_abs_err"), r.get("tolerance")
        detail = f"max_abs_err {err:.3g} > tolerance {tol:.3g}" if err is not None and tol \
            and math.isfinite(err) else (reason or "output disagrees with float64")
        return f"mismatch: {detail}"
    if status == "oom":
        asked = f", asked for {_mib(r['oom_bytes'])}" if r.get("oom_bytes") else ""
        guess = " (predicted from a smaller seq_len)" if r.get("predicted") else ""
        return f"out of memory{asked}{guess}"
    if status != "ok":
        return f"{status}: {reason or 'no reason given'}"
    if not r.get("median_s") or not math.isfinite(r["median_s"]):
        return "no time was measured"
    if r.get("stable") is False:
        return f"unstable figure, not trusted: {r.get('instability') or 'measured under contention'}"
    if budget is not None:
        mem = r.get("peak_mem_bytes")
        if mem is None:
            return "its memory was not measured, so it cannot be shown to fit the budget"
        if mem > budget:
            return f"over the memory budget: needs {_mib(mem)}, budget {_mib(budget)}"
    return None


def _within_noise(fast: dict, slow: dict, p: float | None) -> bool:
    close = slow["median_s"] / fast["median_s"] < 1 + MIN_REL_UNCERTAINTY
    return close or p is None or p < P_FASTER


def recommend(records: list[dict], problem: dict, budget: int | None = None) -> dict:
    """The answer for `problem` (SIZES and KINDS keys) from `records`; see the module text."""
    shape, distance = nearest_shape(records, problem)
    here = {}
    for r in records:
        if _kind(r) == _kind(shape) and _sizes(r) == _sizes(shape):
            here.setdefault(r["impl"], r)  # one record per impl (the first seed)
    rows = []
    for impl, r in sorted(here.items()):
        why = rejection(r, budget)
        rows.append({"impl": impl, "status": r["status"], "median_s": r.get("median_s"),
                     "peak_mem_bytes": r.get("peak_mem_bytes"), "verdict": "rejected" if why
                     else "candidate", "reason": why or "", "samples": r.get("samples_s") or []})
    ranked = sorted((x for x in rows if x["verdict"] == "candidate"), key=lambda x: x["median_s"])
    out = {"problem": problem, "shape": shape, "exact": distance == 0,
           "mem_budget_bytes": budget, "recommended": None, "median_s": None,
           "runner_up": None, "margin": None, "p_faster": None, "tie": False, "tied_with": []}
    if ranked:
        best = ranked[0]
        best["verdict"] = "recommended"
        out.update(recommended=best["impl"], median_s=best["median_s"])
        for other in ranked[1:]:
            p = p_faster(best["samples"], other["samples"])
            ratio = other["median_s"] / best["median_s"]
            other.update(ratio=ratio, p_faster=p)
            if _within_noise(best, other, p):
                other["verdict"] = "tie"
                other["reason"] = (f"within noise of {best['impl']}: {ratio:.3f}x its median, "
                                   f"P({best['impl']} faster) = {_p_text(p)}")
                out["tied_with"].append(other["impl"])
            else:
                other["verdict"] = "slower"
                other["reason"] = (f"slower: {ratio:.2f}x the median of {best['impl']}, "
                                   f"P({best['impl']} faster) = {_p_text(p)}")
        if len(ranked) > 1:
            second = ranked[1]
            out.update(runner_up=second["impl"], margin=second["ratio"],
                       p_faster=second["p_faster"], tie=bool(out["tied_with"]))
    out["implementations"] = [{k: v for k, v in x.items() if k != "samples"} for x in rows]
    return out


def _p_text(p: float | None) -> str:
    if p is None:
        return "unknown (too few samples)"
    return f"{p:.3f}" if p < 0.999 else "> 0.999"


def shapes(records: list[dict]) -> list[dict]:
    """Every shape the records measured (SIZES and KINDS), in a stable order."""
    found = {tuple((k, bool(value_of(r, k)) if k == "causal" else value_of(r, k))
                   for k in (*KINDS, *SIZES)) for r in records}
    return [dict(s) for s in sorted(found, key=lambda s: tuple(sort_key(v) for _, v in s))]


def dispatch_table(records: list[dict], budget: int | None = None) -> list[dict]:
    """The answer for every measured shape: the run's dispatch table."""
    return [recommend(records, shape, budget) for shape in shapes(records)]
