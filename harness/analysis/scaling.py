"""How cost grows with sequence length, framework-free: per implementation and configuration,
the local exponent between each pair of neighbouring seq_lens, and one fitted exponent only
where the points are consistent with a single power law.

Local exponent between n1 < n2: log(v2 / v1) / log(n2 / n1), with an interval whose half-widths
are the two points' log half-widths (`series.Point`) added in quadrature, over log(n2 / n1).

The single exponent: a least-squares line of log(value) on log(N) over the largest FIT_POINTS
seq_lens, with a Student's t interval. It is reported only when (1) the points are consistent
with one line given their own intervals: the weighted residuals' chi-square, with n - 2 degrees
of freedom, is not significant at POWER_LAW_ALPHA; and (2) its interval is no wider than
±MAX_HALF_WIDTH. Otherwise the row says "no single power law over N=a..b" and why, and the
local exponents are what the data support.

Series, intervals and the configuration key are `harness.analysis.series`; crossovers are
`harness.analysis.crossovers`. Unstable times are left out, and the fit row says which
seq_lens (`left_out`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from harness.analysis.crossovers import crossovers
from harness.analysis import series
from harness.analysis.series import METRICS, Point
from harness.case import CONFIG_FIELDS, axis_title, config_order, label_axes, label_cells
from harness.store import write_json

__all__ = ["crossovers", "fit_exponent", "fits", "format_fits", "format_local", "local_rows",
           "power_law_test", "write_scaling"]

# The fit uses the largest FIT_POINTS seq_lens with a value: at small N fixed overheads (launch,
# dispatch, allocation) and linear terms dominate, so the asymptotic exponent is read off the top
# of the sweep. Three points are the fewest that leave a residual to estimate the CI from.
FIT_POINTS = 4
MIN_POINTS = 3
FIT_CONFIDENCE = 0.95  # of the exponent's interval (Student's t)
SCALING = "scaling.json"
POWER_LAW_ALPHA = 0.01  # chi-square test of the points against one line
MAX_HALF_WIDTH = 0.5  # an exponent known no better than ±0.5 is not reported as one
CROSSOVER_MARGIN = 1.1  # and orders closer than 10% are ties, whatever the intervals say
Z = stats.norm.ppf(0.975)  # a point's 95% half-width over its standard error


@dataclass(frozen=True)
class Fit:
    """value ≈ exp(intercept) · N**exponent over `seq_lens`; [ci_low, ci_high] is the
    FIT_CONFIDENCE interval."""
    exponent: float
    ci_low: float
    ci_high: float
    intercept: float
    r2: float
    n_points: int
    seq_lens: tuple


def fit_exponent(seq_lens, values, points: int = FIT_POINTS) -> Fit | None:
    """Least-squares line of log(value) on log(seq_len) over the largest `points` seq_lens.

    The CI is exponent ± t(0.5 + FIT_CONFIDENCE / 2, n-2)·stderr (t(0.975) for 95%): with only
    a handful of points the normal quantile would claim far more certainty than the data give.
    None with fewer than 3 points (two points always fit exactly, leaving nothing to estimate
    the error from). seq_lens must be distinct and values positive.
    """
    if points < MIN_POINTS:
        raise ValueError(f"points must be at least {MIN_POINTS}, got {points}")
    pairs = sorted(zip(seq_lens, values))
    if len({n for n, _ in pairs}) != len(pairs):
        raise ValueError("seq_lens must be distinct; reduce repeated measurements first")
    pairs = pairs[-points:]
    if len(pairs) < MIN_POINTS:
        return None
    if any(not (v > 0 and math.isfinite(v)) for _, v in pairs) or pairs[0][0] <= 0:
        raise ValueError("seq_lens and values must be positive and finite")
    x = np.log([float(n) for n, _ in pairs])
    y = np.log([float(v) for _, v in pairs])
    line = stats.linregress(x, y)
    half = stats.t.ppf(0.5 + FIT_CONFIDENCE / 2, len(pairs) - 2) * line.stderr
    residual = y - (line.intercept + line.slope * x)
    spread = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(residual ** 2)) / spread if spread > 0 else 1.0
    return Fit(exponent=float(line.slope), ci_low=float(line.slope - half),
               ci_high=float(line.slope + half), intercept=float(line.intercept), r2=r2,
               n_points=len(pairs), seq_lens=tuple(int(n) for n, _ in pairs))


def power_law_test(seq_lens, pts: list[Point]) -> dict:
    """Are these points one straight line in log-log, given their intervals? Weighted least
    squares (each point's standard error: its larger log half-width / Z), and the chi-square
    of the weighted residuals with n - 2 degrees of freedom."""
    x = np.log(np.asarray(seq_lens, float))
    y = np.array([p.log for p in pts])
    se = np.array([max(p.down, p.up) / Z for p in pts])
    slope, intercept = np.polyfit(x, y, 1, w=1 / se)
    chi2 = float(np.sum(((y - (intercept + slope * x)) / se) ** 2))
    dof = len(pts) - 2
    return {"chi2": chi2, "dof": dof, "p": float(stats.chi2.sf(chi2, dof)),
            "alpha": POWER_LAW_ALPHA}


def local_exponents(by_n: dict[int, Point]) -> list[dict]:
    """The slope between each pair of neighbouring seq_lens, with its interval."""
    ns = sorted(by_n)
    out = []
    for n1, n2 in zip(ns, ns[1:]):
        a, b = by_n[n1], by_n[n2]
        span = math.log(n2 / n1)
        k = (b.log - a.log) / span
        out.append({"from_n": n1, "to_n": n2, "exponent": k,
                    "ci_low": k - math.hypot(a.up, b.down) / span,
                    "ci_high": k + math.hypot(a.down, b.up) / span})
    return out


def _verdict(fit: Fit, by_n: dict[int, Point]) -> tuple[bool, dict, str]:
    """(one power law?, the test, why not) for a fit over its seq_lens."""
    test = power_law_test(fit.seq_lens, [by_n[n] for n in fit.seq_lens])
    where = f"no single power law over N={fit.seq_lens[0]}..{fit.seq_lens[-1]}"
    if test["p"] < POWER_LAW_ALPHA:
        return False, test, (f"{where}: the points miss one line by more than their intervals "
                             f"allow (chi-square {test['chi2']:.1f} on {test['dof']} dof, "
                             f"p = {test['p']:.2g}); see the local exponents")
    half = (fit.ci_high - fit.ci_low) / 2
    if half > MAX_HALF_WIDTH:
        return False, test, (f"{where}: the fitted exponent is known only to ±{half:.2f} "
                             f"(more than ±{MAX_HALF_WIDTH:g}); see the local exponents")
    return True, test, ""


def fits(records: list[dict], points: int = FIT_POINTS) -> list[dict]:
    """One row per (impl, configuration, metric) that has at least one usable value.

    `local` holds the local exponents. `power_law` is True when the single exponent is reported,
    False when the points reject one power law (exponent None, `note` says why), None with fewer
    than 3 seq_lens (exponent None, `note` says so).
    """
    rows = []
    left_out = series.unstable_seq_lens(records)
    for metric in METRICS:
        for config, impls in series.points(records, metric).items():
            for impl, by_n in impls.items():
                ns = sorted(by_n)
                fit = fit_exponent(ns, [by_n[n].value for n in ns], points)
                row = {"impl": impl, **dict(zip(CONFIG_FIELDS, config)), "metric": metric,
                       "left_out": left_out.get((config, impl), []) if metric == "time" else [],
                       "local": local_exponents(by_n), "power_law": None, "test": None}
                if fit is None:
                    plural = "seq_len" if len(ns) == 1 else "seq_lens"
                    row.update(exponent=None, ci_low=None, ci_high=None, r2=None,
                               n_points=len(ns), seq_lens=ns,
                               note=f"only {len(ns)} {plural} with a value")
                else:
                    one, test, why = _verdict(fit, by_n)
                    row.update(power_law=one, test=test, r2=fit.r2, n_points=fit.n_points,
                               seq_lens=list(fit.seq_lens), note=why,
                               exponent=fit.exponent if one else None,
                               ci_low=fit.ci_low if one else None,
                               ci_high=fit.ci_high if one else None)
                if row["left_out"]:
                    left = "left out unstable N=" + ", ".join(map(str, row["left_out"]))
                    row["note"] = "; ".join(filter(None, [row["note"], left]))
                rows.append(row)
    metric_rank = {m: i for i, m in enumerate(METRICS)}
    rows.sort(key=lambda r: (config_order(tuple(r[k] for k in CONFIG_FIELDS)),
                             metric_rank[r["metric"]], r["impl"]))
    return rows


def local_rows(fit_rows: list[dict]) -> list[dict]:
    """The local exponents of every fit row, one flat row each (scaling.json's `local`)."""
    keys = ("impl", *CONFIG_FIELDS, "metric")
    return [{**{k: r[k] for k in keys}, **seg} for r in fit_rows for seg in r.get("local", [])]


def write_scaling(run_dir: str | Path, records: list[dict]) -> Path:
    """Write run_dir/scaling.json (fits, local exponents, time crossovers); written whole, then
    renamed."""
    path = Path(run_dir) / SCALING
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = fits(records)
    data = {"fit_points": FIT_POINTS, "power_law_alpha": POWER_LAW_ALPHA,
            "max_half_width": MAX_HALF_WIDTH, "min_rel_uncertainty": series.MIN_REL_UNCERTAINTY,
            "crossover_margin": CROSSOVER_MARGIN, "fits": rows, "local": local_rows(rows),
            "crossovers": crossovers(records, min_ratio=CROSSOVER_MARGIN)}
    return write_json(path, data, indent=2)  # strict JSON: NaN as null, numpy as numbers


def _label_axes(fit_rows: list[dict]) -> tuple[list[str], list[str]]:
    """(label axes, their column names, impl first): as every table labels a configuration."""
    axes = label_axes(fit_rows)
    return axes, ["impl", *(axis_title(a) for a in axes)]


NO_POWER_LAW = "no single power law"


def format_fits(fit_rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of strings: one row per implementation and configuration, with the time
    and the memory exponent side by side, each with its CI, and the seq_lens fitted.

    A metric whose points reject one power law shows NO_POWER_LAW (the local exponents are in
    `format_local`); one with too few points shows "-" (its note is in the fit rows).
    """
    axes, names = _label_axes(fit_rows)
    grouped: dict[tuple, dict[str, dict]] = {}
    for r in fit_rows:
        grouped.setdefault((r["impl"], *label_cells(r, axes)), {})[r["metric"]] = r
    ci = f"{FIT_CONFIDENCE:.0%} CI"
    header = [*names, "time k", ci, "memory k", ci, "points"]
    body = []
    for key, by_metric in grouped.items():
        cells = list(key)
        points = ""
        for metric in METRICS:
            r = by_metric.get(metric)
            if r is not None and r.get("power_law") is False:
                cells += [NO_POWER_LAW, ""]
            elif r is None or r["exponent"] is None:
                cells += ["-", ""]
                continue
            else:
                cells += [f"{r['exponent']:.2f}", f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}]"]
            points = points or f"{r['seq_lens'][0]}..{r['seq_lens'][-1]}"
            if r.get("left_out"):
                points += f" (unstable N={', '.join(map(str, r['left_out']))} left out)"
        body.append(cells + [points])
    return header, body


def local_text(seg: dict) -> str:
    """"1.93 ±0.05": the local exponent and the larger side of its interval."""
    half = max(seg["exponent"] - seg["ci_low"], seg["ci_high"] - seg["exponent"])
    return f"{seg['exponent']:.2f} ±{half:.2f}"


def format_local(fit_rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of strings: per implementation, configuration and metric, the local
    exponent between each pair of neighbouring seq_lens (columns "N a→b")."""
    axes, names = _label_axes(fit_rows)
    spans = sorted({(s["from_n"], s["to_n"]) for r in fit_rows for s in r.get("local", [])})
    header = [*names, "metric", *[f"N {a}→{b}" for a, b in spans]]
    body = []
    for r in fit_rows:
        if not r.get("local"):
            continue
        by_span = {(s["from_n"], s["to_n"]): local_text(s) for s in r["local"]}
        body.append([r["impl"], *label_cells(r, axes), r["metric"],
                     *[by_span.get(span, "") for span in spans]])
    return header, body
