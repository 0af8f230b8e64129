"""The statistics of one timing comparison: two sides' samples (or repeat medians) in, a
verdict, its evidence, the smallest slowdown it could have detected and a note naming the rule
and the figures that decided it out. harness.analysis.compare applies them case by case and
explains the rules in its docstring.
"""
from __future__ import annotations

import math

import numpy as np

from harness.measure.repeats import log_interval, split
from harness.measure.timer import ci_rel
from harness.units import duration

DEFAULT_THRESHOLD = 0.05
ALPHA = 0.001
CONFIDENCE = 0.95
RESAMPLES = 2000
POWER = 0.80  # the chance at which `min_detectable_ratio` would be caught


def bootstrap_ratio_ci(base, new, resamples: int = RESAMPLES, confidence: float = CONFIDENCE,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of median(new) / median(base), each side resampled."""
    base, new = np.asarray(base, float), np.asarray(new, float)
    rng = np.random.default_rng(seed)
    ratios = np.empty(resamples)
    chunk = max(1, 2_000_000 // max(len(base), len(new)))  # bounded memory for long runs
    for start in range(0, resamples, chunk):
        k = min(chunk, resamples - start)
        mb = np.median(base[rng.integers(0, len(base), (k, len(base)))], axis=1)
        mn = np.median(new[rng.integers(0, len(new), (k, len(new)))], axis=1)
        ratios[start:start + k] = mn / mb
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return float(low), float(high)


def judge_samples(base, new, threshold: float = DEFAULT_THRESHOLD,
                  floor_s: float | None = None, min_effect: float = 0.0,
                  rule: str = "single run") -> dict:
    """Timing verdict and its evidence for two sample sets (seconds per call); a change must
    also exceed `min_effect` to be called a regression or an improvement. `floor_s`: the
    clocks' resolution per call (harness.measure.resolution), None where it was not measured."""
    from scipy.stats import mannwhitneyu, norm

    base, new = np.asarray(base, float), np.asarray(new, float)
    mb, mn = float(np.median(base)), float(np.median(new))
    low, high = bootstrap_ratio_ci(base, new)
    evidence = {"base_median_s": mb, "new_median_s": mn, "ratio": mn / mb, "ci_low": low,
                "ci_high": high,
                "p_slower": float(mannwhitneyu(new, base, alternative="greater").pvalue),
                "p_faster": float(mannwhitneyu(new, base, alternative="less").pvalue),
                "diff_s": mn - mb, "floor_s": floor_s, "base_ci_rel": ci_rel(base),
                "new_ci_rel": ci_rel(new), "n_base": len(base), "n_new": len(new)}
    # the log ratio's standard error, read back from its interval's width
    se = (math.log(high) - math.log(low)) / (2 * float(norm.ppf(0.5 + CONFIDENCE / 2)))
    effect = max(threshold, min_effect)
    evidence["min_detectable_ratio"] = min_detectable_ratio(se, None, effect, floor_s, mb)
    return {**evidence, **decide(rule, evidence, threshold, effect)}


def judge_repeats(base: dict, new: dict, threshold: float = DEFAULT_THRESHOLD,
                  floor_s: float | None = None) -> dict:
    """Timing verdict from two records' repeat medians (Welch's t on their logs)."""
    from scipy.stats import t

    cb, se_b, dof_b, _ = log_interval(base["repeat_medians_s"], _half_widths(base))
    cn, se_n, dof_n, _ = log_interval(new["repeat_medians_s"], _half_widths(new))
    d, se = cn - cb, math.hypot(se_b, se_n)
    dof = se ** 4 / (se_b ** 4 / dof_b + se_n ** 4 / dof_n) if se > 0 else dof_b + dof_n
    q = float(t.ppf(0.5 + CONFIDENCE / 2, dof))
    mb, mn = math.exp(cb), math.exp(cn)
    z = d / se if se > 0 else 0.0
    evidence = {"base_median_s": mb, "new_median_s": mn, "ratio": mn / mb,
                "ci_low": math.exp(d - q * se), "ci_high": math.exp(d + q * se),
                "p_slower": float(t.sf(z, dof)), "p_faster": float(t.cdf(z, dof)),
                "diff_s": mn - mb, "floor_s": floor_s, "base_ci_rel": base.get("ci_rel"),
                "new_ci_rel": new.get("ci_rel"), "n_base": len(base["repeat_medians_s"]),
                "n_new": len(new["repeat_medians_s"]),
                "min_detectable_ratio": min_detectable_ratio(se, dof, threshold, floor_s, mb)}
    return {**evidence, **decide("repeats", evidence, threshold, threshold)}


def min_detectable_ratio(se: float, dof: float | None, effect: float, floor_s: float | None,
                         base_median_s: float) -> float:
    """The smallest slowdown (new/base) this comparison would call a regression with POWER
    probability: the log ratio estimate, normal (dof None) or Student's t with its standard
    error `se`, must clear both the one-sided test at ALPHA and the interval's lower bound
    above 1 + effect; and the slowdown must exceed the clocks' resolution."""
    from scipy.stats import norm, t

    dist = norm if dof is None else t(dof)
    q = float(dist.ppf(0.5 + CONFIDENCE / 2))
    needed = max(float(dist.isf(ALPHA)) * se, q * se + math.log1p(effect)) + \
        float(dist.ppf(POWER)) * se
    floor = 1 + (floor_s or 0.0) / base_median_s if base_median_s > 0 else 1.0
    return max(math.exp(needed), floor)


def decide(rule: str, e: dict, threshold: float, effect: float) -> dict:
    """The timing verdict from a rule's evidence, and a note naming the rule and the figures
    that decided it. `unchanged` claims the ratio is within the threshold: its interval must
    say so; a change too small to resolve, or neither proven nor excluded, is `noisy`."""
    low, high, diff, floor = e["ci_low"], e["ci_high"], e["diff_s"], e["floor_s"] or 0.0
    shown = f"{rule}: {e['ratio']:.3f}x [{low:.3f}, {high:.3f}]"
    # each direction: its p, and the interval's end nearest 1 as a factor of change
    for word, p, factor, change in (("slower", e["p_slower"], low, diff),
                                    ("faster", e["p_faster"], 1 / high, -diff)):
        if p >= ALPHA or factor <= 1 + threshold:
            continue
        if factor <= 1 + effect:
            return {"verdict": "noisy", "note": f"{shown}: {word}, but within the "
                    f"{1 + effect:g}x that two single-process runs of the same code can differ "
                    "by (measure with --repeats to judge it)"}
        if change <= floor:
            return {"verdict": "noisy", "note": f"{shown}: {word} by {duration(change)}, within "
                    f"the clocks' resolution of {duration(floor)} per call: too small to call"}
        verdict, side = ("regression", "above") if word == "slower" else ("improvement", "below")
        bound = 1 + effect if word == "slower" else 1 / (1 + effect)
        return {"verdict": verdict, "note": f"{shown}: interval {side} {bound:.3g}, "
                f"p ({word}) {p:.2g} < {ALPHA:g}"}
    within = 1 / (1 + threshold) <= low and high <= 1 + threshold
    spread = max(e["base_ci_rel"] or 0.0, e["new_ci_rel"] or 0.0)
    if within and spread <= threshold:
        return {"verdict": "unchanged",
                "note": f"{shown}: interval within ±{threshold:.0%}"}
    if within:
        return {"verdict": "noisy", "note": f"{shown}: a run's own median interval is "
                f"±{spread:.1%}, wider than ±{threshold:.0%}"}
    return {"verdict": "noisy", "note": f"{shown}: interval reaches beyond ±{threshold:.0%}, "
            "so neither a change nor its absence is shown (smallest detectable slowdown "
            f"{e['min_detectable_ratio']:.2f}x)"}


def _half_widths(record: dict) -> list[float]:
    """Each repeat's own relative CI half-width (from its samples)."""
    return [part["ci_rel"] for part in split(record)]
