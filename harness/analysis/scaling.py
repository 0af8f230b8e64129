"""How cost grows with sequence length, framework-free: log-log fits of time and peak memory
against N (the exponent, with a 95% confidence interval) and where two implementations swap order.

Only records with status "ok" and a positive, finite value count: a failed or unmeasured case says
nothing about cost. A configuration is everything held fixed along a seq_len sweep; records whose
seq_len_kv differs from seq_len are a separate configuration (`kv_equals_seq_len`), since their
cost grows differently. Several records for one impl, configuration and seq_len (seeds, repeated
runs) are reduced to their median, so each seq_len weighs the same in a fit. An unstable time
(`stable: false`: measured under contention, or implausible) is left out of the time fits and
the crossovers, and the fit row says which seq_lens it left out (`left_out`).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np
from scipy import stats

from harness.constants import CONFIG_FIELDS as CASE_CONFIG_FIELDS, OPTIONAL_AXES

# The fit uses the largest FIT_POINTS seq_lens with a value: at small N fixed overheads (launch,
# dispatch, allocation) and linear terms dominate, so the asymptotic exponent is read off the top
# of the sweep. Three points are the fewest that leave a residual to estimate the CI from.
FIT_POINTS = 4
MIN_POINTS = 3
FIT_CONFIDENCE = 0.95  # of the exponent's interval (Student's t)
SCALING = "scaling.json"

METRICS = {"time": "median_s", "memory": "peak_mem_bytes"}
CONFIG_FIELDS = CASE_CONFIG_FIELDS + ("kv_equals_seq_len",)


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


def _config(record: dict) -> tuple:
    kv = record.get("seq_len_kv")
    square = kv is None or kv == record["seq_len"]
    return tuple(record.get(k) for k in CONFIG_FIELDS[:-1]) + (square,)


def _usable(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value) and value > 0


def _series(records: list[dict], metric: str) -> dict[tuple, dict[str, dict[int, float]]]:
    """{config: {impl: {seq_len: median value}}} from the usable records of one metric."""
    field = METRICS[metric]
    raw: dict[tuple, dict[str, dict[int, list[float]]]] = {}
    for r in records:
        if metric == "time" and r.get("stable") is False:
            continue
        if r.get("status") == "ok" and _usable(r.get(field)):
            by_n = raw.setdefault(_config(r), {}).setdefault(r["impl"], {})
            by_n.setdefault(int(r["seq_len"]), []).append(float(r[field]))
    return {config: {impl: {n: float(np.median(vs)) for n, vs in by_n.items()}
                     for impl, by_n in impls.items()}
            for config, impls in raw.items()}


def sort_key(value) -> tuple:
    """Sort key that keeps numbers numeric (batch 2 before 16) and tolerates None."""
    if value is None:
        return (2, 0, "")
    if isinstance(value, (int, float)):
        return (0, value, "")
    return (1, 0, str(value))


def _config_key(config: tuple) -> tuple:
    return tuple(sort_key(v) for v in config)


def fits(records: list[dict], points: int = FIT_POINTS) -> list[dict]:
    """One row per (impl, configuration, metric) that has at least one usable value.

    A metric with no value at all for an impl and configuration (never measured) gets no row; one
    with fewer than 3 seq_lens gets a row whose exponent is None and whose `note` says why.
    """
    rows = []
    left_out: dict[tuple, list[int]] = {}
    for r in records:
        if r.get("status") == "ok" and r.get("stable") is False:
            left_out.setdefault((_config(r), r["impl"]), []).append(int(r["seq_len"]))
    for metric in METRICS:
        for config, impls in _series(records, metric).items():
            for impl, by_n in impls.items():
                ns = sorted(by_n)
                fit = fit_exponent(ns, [by_n[n] for n in ns], points)
                row = {"impl": impl, **dict(zip(CONFIG_FIELDS, config)), "metric": metric,
                       "left_out": sorted(left_out.get((config, impl), [])) if metric == "time"
                       else []}
                if fit is None:
                    plural = "seq_len" if len(ns) == 1 else "seq_lens"
                    row.update(exponent=None, ci_low=None, ci_high=None, r2=None,
                               n_points=len(ns), seq_lens=ns,
                               note=f"only {len(ns)} {plural} with a value")
                else:
                    row.update(exponent=fit.exponent, ci_low=fit.ci_low, ci_high=fit.ci_high,
                               r2=fit.r2, n_points=fit.n_points, seq_lens=list(fit.seq_lens),
                               note="")
                if row["left_out"]:
                    left = "left out unstable N=" + ", ".join(map(str, row["left_out"]))
                    row["note"] = "; ".join(filter(None, [row["note"], left]))
                rows.append(row)
    metric_rank = {m: i for i, m in enumerate(METRICS)}
    rows.sort(key=lambda r: (_config_key(tuple(r[k] for k in CONFIG_FIELDS)),
                             metric_rank[r["metric"]], r["impl"]))
    return rows


def _crossing(n1: int, d1: float, n2: int, d2: float) -> float:
    """Where the log ratio, linear in log N between two points, reaches zero."""
    x1, x2 = math.log(n1), math.log(n2)
    return math.exp(x1 + d1 / (d1 - d2) * (x2 - x1))


CROSSOVER_MARGIN = 1.1  # orders closer than 10% count as ties when crossovers are reported


def crossovers(records: list[dict], metric: str = "time", min_ratio: float = 1.0) -> list[dict]:
    """Where two implementations of one configuration swap order as N grows.

    Over the seq_lens both have, ascending, each change of sign of log(a) - log(b) is a crossover,
    placed by linear interpolation in log-log space (exact for two power laws). Equal values are
    not flips: a sign change across a run of ties is one crossover, placed in the middle of the
    ties (geometrically) and reported between the last strictly ordered seq_lens either side.
    With `min_ratio` > 1, values within that ratio of each other count as ties, so two equal
    kernels trading places in the noise are not reported as crossing.
    """
    tie = math.log(min_ratio)
    out = []
    for config, impls in _series(records, metric).items():
        for a, b in combinations(sorted(impls), 2):
            shared = sorted(set(impls[a]) & set(impls[b]))
            if len(shared) < 2:
                continue
            last = None  # (seq_len, log ratio) of the last strictly ordered point
            ties: list[int] = []
            for n in shared:
                d = math.log(impls[a][n]) - math.log(impls[b][n])
                if abs(d) <= tie:
                    if last is not None:
                        ties.append(n)
                    continue
                if last is not None and (d > 0) != (last[1] > 0):
                    n1, d1 = last
                    where = math.sqrt(ties[0] * ties[-1]) if ties else _crossing(n1, d1, n, d)
                    out.append({**dict(zip(CONFIG_FIELDS, config)), "metric": metric,
                                "faster_below": a if d1 < 0 else b,
                                "faster_above": a if d < 0 else b,
                                "seq_len": int(round(where)), "between": (n1, n)})
                last, ties = (n, d), []
    out.sort(key=lambda r: (_config_key(tuple(r[k] for k in CONFIG_FIELDS)), r["seq_len"],
                            r["faster_below"], r["faster_above"]))
    return out


def _json_safe(value):
    """NaN/inf become None and numpy scalars plain Python, so strict JSON readers accept it."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_scaling(run_dir: str | Path, records: list[dict]) -> Path:
    """Write run_dir/scaling.json (fits and time crossovers); written whole, then renamed."""
    path = Path(run_dir) / SCALING
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"fit_points": FIT_POINTS, "crossover_margin": CROSSOVER_MARGIN, "fits": fits(records),
            "crossovers": crossovers(records, min_ratio=CROSSOVER_MARGIN)}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_json_safe(data), indent=2, allow_nan=False))
    tmp.replace(path)
    return path


def format_fits(fit_rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of strings: one row per implementation and configuration, with the time
    and the memory exponent side by side, each with its CI, and the seq_lens fitted.

    Axes with a single value among the rows are not shown, as in `summary.latency_table`;
    a metric without a fit shows "-" (its note is in the fit rows and scaling.json).
    """
    varying = [k for k in (*OPTIONAL_AXES, "kv_equals_seq_len")
               if len({r.get(k) for r in fit_rows}) > 1]
    keys = ["impl", "dtype", "causal", *varying]
    grouped: dict[tuple, dict[str, dict]] = {}
    for r in fit_rows:
        grouped.setdefault(tuple(r.get(k) for k in keys), {})[r["metric"]] = r
    ci = f"{FIT_CONFIDENCE:.0%} CI"
    header = ["impl", "dtype", "mask", *varying, "time k", ci, "memory k", ci, "points"]
    body = []
    for key, by_metric in grouped.items():
        cells = [str(v) for v in key]
        cells[2] = "causal" if key[2] else "full"
        points = ""
        for metric in METRICS:
            r = by_metric.get(metric)
            if r is None or r["exponent"] is None:
                cells += ["-", ""]
                continue
            cells += [f"{r['exponent']:.2f}", f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}]"]
            points = points or f"{r['seq_lens'][0]}..{r['seq_lens'][-1]}"
            if r.get("left_out"):
                points += f" (unstable N={', '.join(map(str, r['left_out']))} left out)"
        body.append(cells + [points])
    return header, body
