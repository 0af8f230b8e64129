"""What both reports show, computed once: the HTML page and the Markdown summary render these
rows, so their numbers cannot disagree. Framework-free (records are plain dicts).

Everything here tolerates the runs people really have: no records, only unsupported or failed
cases, a run cut off half way (no scaling.json, a half-written last line), one implementation,
one seq_len. A section with nothing to show gets rows that are empty, and the renderers say what
is missing instead of drawing nothing.
"""
from __future__ import annotations

from collections import Counter

from harness.analysis import stability, summary
from harness.case import (Case, axis_title, config_key, config_order, label_axes, label_cells,
                          replicate_key, series_key, sort_key, sweep_len)
from harness.constants import FAILED_STATUSES, STATUSES
from harness.measure.flops import padded_flops
from harness.measure.timer import CONFIDENCE, relative_half_width
from harness.report.format import (finite, fmt_err, fmt_mib, fmt_pct, fmt_ratio, fmt_tflops,
                                   percent, plural)
from harness.report.run import Run
from harness.report.shapes import (config_label, fastest_by_shape, impls_of, shape_columns,
                                   shape_key, shape_labels, shape_order, varying)
from harness.units import duration

MISSING_SHOWN = 10  # missing case ids the verdict names before it says "and N more"


# ---- verdict and per-implementation summary --------------------------------------------

def verdict(run: Run) -> dict:
    """The banner: `level` is ok | fail | warn | empty; `headline` one sentence; `notes` more."""
    records = run.records
    counts = summary.status_counts(records)
    failed = sum(counts[s] for s in FAILED_STATUSES)
    notes = []
    if not records:
        level, headline = "empty", "No case was recorded in this run."
    elif failed:
        level = "fail"
        parts = [plural(counts[s], s) for s in FAILED_STATUSES if counts[s]]
        headline = f"{failed} of {len(records)} cases failed: {', '.join(parts)}."
    elif counts["ok"] == 0:
        level = "warn"
        headline = (f"Nothing ran: all {len(records)} recorded cases are unsupported on this "
                    "machine.")
    else:
        level = "ok"
        headline = (f"All {counts['ok']} computed cases agree with the float64 reference"
                    + (f" ({counts['unsupported']} not run on this machine)."
                       if counts["unsupported"] else "."))
    if run.plan_error:
        notes.append("plan.json could not be read, so which cases this run planned is unknown: "
                     + run.plan_error)
    if run.missing:
        notes.append(incomplete_note(run))
    elif records and run.scaling_source != "scaling.json" and run.expected is None:
        notes.append("This run has no scaling.json, which a finished run writes: it was "
                     "probably interrupted, so some cases may be missing.")
    if run.cut_line:
        notes.append("The last line of results.jsonl was cut off mid-write and is ignored.")
    if level == "fail" and counts["ok"]:
        notes.append(f"{counts['ok']} cases agree with the float64 reference.")
    advice = stability.advice(records)
    if advice:
        notes.append(advice + " (see Unstable figures).")
    return {"level": level, "headline": headline, "notes": notes, "counts": counts,
            "total": len(records), "complete": run.complete, "coverage": coverage(run)}


def coverage(run: Run) -> str:
    """How much of its plan the run recorded, in words; empty for a run without a plan."""
    if run.plan is None:
        return ""
    if run.complete:
        return f"complete: all {run.expected} planned cases recorded"
    return f"incomplete: {run.expected - len(run.missing)} of {run.expected} planned cases recorded"


def incomplete_note(run: Run) -> str:
    """How much of the plan is recorded, which planned cases are not, and how to finish."""
    missing = run.missing
    shown = ", ".join(f"`{i}`" for i in missing[:MISSING_SHOWN])
    more = len(missing) - MISSING_SHOWN
    note = (f"Incomplete run: {run.expected - len(missing)} of {run.expected} cases recorded, "
            f"{len(missing)} missing (interrupted, or still running). Missing: {shown}"
            + (f" and {more} more." if more > 0 else "."))
    command = run.resume_command()
    if command:
        note += f" Finish it with `{command}`."
    return note


def _matched(records: list[dict]) -> list[dict]:
    """The ok records of the shapes every compared implementation ran, ok and stable
    (`summary.matched_shapes`): the only ones a headline figure aggregates over."""
    matched, _ = summary.matched_shapes(records)
    return [r for r in records if r["status"] == "ok" and shape_key(r) in matched]


def left_out(records: list[dict]) -> list[str]:
    """The shapes the headline figures leave out, and why, one line per configuration."""
    _, gone = summary.matched_shapes(records)
    axes = varying(records)
    lines: dict[str, list[str]] = {}
    for g in sorted(gone, key=lambda g: shape_order(shape_key(g["record"]))):
        lines.setdefault(config_label(g["record"], axes), []).append(
            f"N={g['seq_len']} ({g['why']})")
    return [f"{cfg}: {'; '.join(items)}" for cfg, items in lines.items()]


def impl_summary(records: list[dict]) -> list[dict]:
    """Per implementation: cases by status and where it was the fastest.

    A shape counts as won only when at least two implementations ran it, and only where every
    implementation compared in its configuration has an ok, stable record (`left_out` says
    which shapes that leaves out).
    """
    best = fastest_by_shape(_matched(records))
    contested = {k: v for k, v in best.items() if v["n"] > 1}
    axes = varying(records)
    by_key = {shape_key(r): r for r in records}
    rows = []
    for impl in impls_of(records):
        mine = [r for r in records if r["impl"] == impl]
        counts = Counter(r["status"] for r in mine)
        won = sorted((k for k, v in contested.items() if v["impl"] == impl), key=shape_order)
        ok_keys = {shape_key(r) for r in mine if r["status"] == "ok"}
        ran = [k for k in contested if k in ok_keys]
        where: dict[str, list[str]] = {}
        for k in won:
            r = by_key[k]
            where.setdefault(config_label(r, axes), []).append(str(sweep_len(r)))
        rows.append({
            "impl": impl, "cases": len(mine), **{s: counts.get(s, 0) for s in STATUSES},
            "fastest": len(won), "contested": len(ran),
            "where": "; ".join(f"{cfg} N={', '.join(ns)}" for cfg, ns in where.items()),
        })
    return rows


def fastest_text(row: dict) -> str:
    if not row["contested"]:
        return "-"
    return f"{row['fastest']} of {row['contested']}"


# ---- shapes × implementations -------------------------------------------------------

def latency_cell(r: dict | None, best: dict | None) -> dict:
    """One matrix cell: the median with its spread and its time relative to the fastest."""
    if r is None:
        return {"status": None, "text": "", "title": "not in this run"}
    if r["status"] != "ok" or finite(r["median_s"]) is None:
        text = summary.CELL_FOR_STATUS.get(r["status"], r["status"])
        return {"status": r["status"], "text": text, "title": r["reason"] or r["status"]}
    med = finite(r["median_s"])
    low, high = finite(r["ci_low_s"]), finite(r["ci_high_s"])
    spread = (relative_half_width(med, (low, high)) * 100
              if low is not None and high is not None and med else None)
    rel = med / best["median_s"] if best else None
    title = f"median {duration(med, unit='ms')} ms"
    if low is not None and high is not None:
        title += (f", {percent(CONFIDENCE)} CI [{duration(low, unit='ms')}, "
                  f"{duration(high, unit='ms')}] ms")
    if finite(r["iqr_s"]) is not None:
        title += f", IQR {duration(r['iqr_s'], unit='ms')} ms"
    title += f", {r['n_samples']} samples"
    if r.get("timer"):
        title += f", timer {r['timer']}"
    if r["converged"] is False:
        title += "; did not reach the target CI within its budget"
    unstable = r.get("stable") is False
    if unstable:
        title += f"; UNSTABLE: {r.get('instability') or 'measured under contention'}"
    return {"status": "ok", "median_s": med, "unstable": unstable,
            "text": (summary.UNSTABLE_MARK if unstable else "") + duration(med, unit="ms"),
            "spread": spread, "spread_text": "" if spread is None else f"±{spread:.1f}%" if spread < 10
            else f"±{spread:.0f}%",
            "rel": rel, "rel_text": fmt_ratio(rel), "fastest": rel is not None and rel <= 1.0,
            "converged": r["converged"] is not False, "title": title}


def timers_line(records: list[dict]) -> str:
    """Which timers measured the run's figures, with how many each: `cuda_event` (12), ..."""
    used = summary.timers_used(records)
    return ", ".join(f"{name} ({n})" for name, n in sorted(used.items())) or "nothing timed"


def matrix(records: list[dict]) -> dict:
    """Rows: shapes that at least one implementation ran; columns: implementations."""
    shown = [r for r in records if r["status"] != "unsupported"]
    best = fastest_by_shape(records)
    rows_shown = {shape_key(r) for r in shown}
    by_shape: dict[tuple, dict[str, dict]] = {}
    for r in records:
        if shape_key(r) in rows_shown:
            by_shape.setdefault(shape_key(r), {})[r["impl"]] = r
    impls = impls_of(shown)
    columns = shape_columns(shown) if shown else []
    rows = []
    for key in sorted(by_shape, key=shape_order):
        rows.append({"labels": shape_labels(key, columns),
                     "cells": [latency_cell(by_shape[key].get(i), best.get(key)) for i in impls]})
    return {"columns": columns, "impls": impls, "rows": rows, "timers": timers_line(records)}


# ---- throughput --------------------------------------------------------------------

def raw_tflops(record: dict) -> float | None:
    """What a ragged case computes per second on its padded shape, where that differs from its
    useful TFLOP/s (`tflops`: real tokens only); None otherwise."""
    padded = padded_flops(Case.from_dict(record))
    if not record.get("flops") or padded == record["flops"] or not finite(record["median_s"]):
        return None
    return padded / record["median_s"] / 1e12


def throughput(records: list[dict], env: dict) -> dict:
    """Useful TFLOP/s (real tokens; raw beside it where padding differs) and percent of the
    measured matmul peak, per (impl, configuration) and N."""
    ok = [r for r in records if r["status"] == "ok" and finite(r["tflops"]) is not None]
    axes = varying(ok)
    seq_lens = sorted({sweep_len(r) for r in ok})
    rows: dict[tuple, dict] = {}
    for r in ok:
        row = rows.setdefault(series_key(r), {"impl": r["impl"], "config": config_label(r, axes),
                                              "cells": {}, "dtype": r["dtype"],
                                              "device": r["device"]})
        pct, raw = finite(r["pct_of_peak"]), raw_tflops(r)
        row["cells"][sweep_len(r)] = {"tflops": finite(r["tflops"]), "pct": pct,
                                      "text": fmt_tflops(finite(r["tflops"])),
                                      "pct_text": fmt_pct(pct),
                                      "raw_text": fmt_tflops(raw) if raw else ""}
    ordered = [rows[k] for k in sorted(rows, key=lambda k: (k[0], config_order(k[1:])))]
    for row in ordered:
        row["best"] = max(row["cells"].values(), key=lambda c: c["tflops"])
    peaks = []
    for device, entry in sorted((env.get("peaks") or {}).items()):
        for dtype, value in sorted((entry.get("matmul_tflops") or {}).items()):
            peaks.append({"device": device, "dtype": dtype, "tflops": value,
                          "text": fmt_tflops(value), "n": entry.get("matmul_n")})
    return {"seq_lens": seq_lens, "rows": ordered, "peaks": peaks}


# ---- numeric agreement ---------------------------------------------------------------

def numerics(records: list[dict]) -> list[dict]:
    """Per implementation and dtype: the worst errors against float64 and the tolerance.

    A mismatch whose output held NaN/Inf has no finite error; it is counted, and shown as such.
    """
    checked = [r for r in records if r["status"] == "mismatch"
               or (r["status"] == "ok" and finite(r["max_abs_err"]) is not None)]
    groups: dict[tuple, list[dict]] = {}
    for r in checked:
        groups.setdefault((r["impl"], r["dtype"]), []).append(r)
    rows = []
    for (impl, dtype), rs in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        errs = [finite(r["max_abs_err"]) for r in rs if finite(r["max_abs_err"]) is not None]
        rels = [finite(r["rel_err"]) for r in rs if finite(r["rel_err"]) is not None]
        tols = [finite(r["tolerance"]) for r in rs if finite(r["tolerance"]) is not None]
        ratios = [finite(r["max_abs_err"]) / finite(r["tolerance"]) for r in rs
                  if finite(r["max_abs_err"]) is not None and finite(r["tolerance"])]
        nonfinite = any(r.get("output_finite") is False or
                        r["max_abs_err"] is not None and finite(r["max_abs_err"]) is None
                        for r in rs)
        mism = sum(r["status"] == "mismatch" for r in rs)
        tol_text = "" if not tols else (fmt_err(min(tols)) if min(tols) == max(tols)
                                        else f"{fmt_err(min(tols))} – {fmt_err(max(tols))}")
        worst = max(errs) if errs else None
        rows.append({"impl": impl, "dtype": dtype, "cases": len(rs), "mismatches": mism,
                     "max_abs_err": worst, "rel_err": max(rels) if rels else None,
                     "tol_min": min(tols) if tols else None, "tol_max": max(tols) if tols else None,
                     "ratio": max(ratios) if ratios else None,
                     "texts": {"max_abs_err": "NaN/Inf" if nonfinite else fmt_err(worst),
                               "rel_err": fmt_err(max(rels) if rels else None),
                               "tolerance": tol_text,
                               "ratio": "" if not ratios else f"{max(ratios):.2g}"},
                     "ok": mism == 0})
    return rows


# ---- what did not run, and what failed ------------------------------------------------

def not_run_by_reason(records: list[dict]) -> list[dict]:
    """Unsupported cases grouped by reason, most cases first: who, how many, why."""
    groups: dict[str, list[dict]] = {}
    for r in records:
        if r["status"] == "unsupported":
            groups.setdefault(r["reason"] or "no reason given", []).append(r)
    totals = Counter(r["impl"] for r in records)
    out = []
    for reason, rs in groups.items():
        impls = []
        for impl in sorted({r["impl"] for r in rs}):
            mine = [r for r in rs if r["impl"] == impl]
            dtypes = sorted({r["dtype"] for r in mine})
            whole = len(mine) == totals[impl]
            impls.append({"impl": impl, "cases": len(mine), "whole": whole, "dtypes": dtypes,
                          "text": impl if whole else f"{impl} ({', '.join(dtypes)}: "
                                                     f"{len(mine)} of {totals[impl]} cases)"})
        out.append({"reason": reason, "cases": len(rs), "impls": impls})
    out.sort(key=lambda g: (-g["cases"], g["reason"]))
    return out


def problems(records: list[dict]) -> list[dict]:
    """Every mismatch, error, timeout and out-of-memory, with what it says."""
    rows = []
    for r in summary.failures(records):
        detail = []
        if r["status"] == "mismatch" and finite(r["max_abs_err"]) is not None:
            detail.append(f"max_abs_err {fmt_err(r['max_abs_err'])} > tolerance "
                          f"{fmt_err(finite(r['tolerance']))}")
        if r["status"] == "oom":
            if finite(r["oom_bytes"]):
                detail.append(f"asked for {fmt_mib(r['oom_bytes'])} MiB")
            if r["predicted"]:
                detail.append("predicted from a smaller seq_len, not tried")
        rows.append({"case_id": r["case_id"], "impl": r["impl"], "status": r["status"],
                     "seq_len": r["seq_len"], "dtype": r["dtype"],
                     "reason": r["reason"], "detail": "; ".join(detail)})
    order = {s: i for i, s in enumerate(FAILED_STATUSES)}
    rows.sort(key=lambda x: (order.get(x["status"], 9), x["impl"], sort_key(x["seq_len"])))
    return rows


def unstable_figures(records: list[dict]) -> list[dict]:
    """The figures the harness could not vouch for, each with what was seen."""
    return [{"case_id": r["case_id"], "impl": r["impl"], "text": duration(r["median_s"], unit="ms"),
             "reason": r.get("instability") or "measured under contention",
             "remeasured": r.get("remeasured") or 0}
            for r in stability.unstable(records)]


# ---- headlines ---------------------------------------------------------------------

def headlines(records: list[dict], baseline: str) -> list[dict]:
    """Per configuration, at its largest seq_len that something ran: the fastest implementation,
    its median, and how it compares with the baseline and with the slowest. Only shapes every
    compared implementation ran ok and stable count (`left_out`)."""
    ok = [r for r in _matched(records) if (finite(r["median_s"]) or 0) > 0]
    axes = varying(ok)
    configs: dict[tuple, list[dict]] = {}
    for r in ok:
        configs.setdefault((config_key(r), replicate_key(r)), []).append(r)
    out = []
    for key in sorted(configs, key=lambda k: (config_order(k[0]), *map(sort_key, k[1]))):
        rs = configs[key]
        top = max(sweep_len(r) for r in rs)
        at = [r for r in rs if sweep_len(r) == top]
        best = min(at, key=lambda r: r["median_s"])
        worst = max(at, key=lambda r: r["median_s"])
        base = next((r for r in at if r["impl"] == baseline), None)
        out.append({"config": config_label(best, axes), "seq_len": top, "impl": best["impl"],
                    "median_s": best["median_s"],
                    "text": duration(best["median_s"], unit="ms"),
                    "impls": len({r["impl"] for r in at}), "baseline": baseline,
                    "vs_baseline": (base["median_s"] / best["median_s"])
                    if base and base is not best else None,
                    "slowest": worst["impl"] if worst is not best else None,
                    "vs_slowest": worst["median_s"] / best["median_s"]
                    if worst is not best else None})
    return out


def headline_text(h: dict) -> str:
    text = f"{h['config']}, N={h['seq_len']}: fastest {h['impl']} at {h['text']} ms"
    extra = []
    if h["vs_baseline"] is not None:
        extra.append(f"{fmt_ratio(h['vs_baseline'])} faster than {h['baseline']}")
    if h["slowest"] and h["slowest"] != h["baseline"]:
        extra.append(f"{fmt_ratio(h['vs_slowest'])} faster than the slowest, {h['slowest']}")
    if h["impls"] == 1:
        extra.append("the only implementation that ran it")
    return text + (f" ({'; '.join(extra)})" if extra else "")


# ---- compile time -------------------------------------------------------------------------

def compile_times(records: list[dict]) -> tuple[list[str], list[list[str]]]:
    """compile_s of compiled and jitted code (the first call: tracing, compilation, autotuning
    and one run), in seconds, per implementation and configuration by seq_len. Eager code has
    none, so it has no row; a case that failed before its first call has an empty cell."""
    timed = [r for r in records if r.get("compile_s") is not None]
    if not timed:
        return [], []
    lens = sorted({sweep_len(r) for r in timed})
    axes = label_axes(timed)
    by_config: dict[tuple, dict[int, float]] = {}
    labels: dict[tuple, list[str]] = {}
    for r in timed:
        key = series_key(r)
        labels[key] = [r["impl"], *label_cells(r, axes)]
        by_config.setdefault(key, {})[sweep_len(r)] = r["compile_s"]
    header = ["impl", *(axis_title(a) for a in axes), *[f"N={n}" for n in lens]]
    rows = [[*labels[key], *[f"{seen[n]:.2f}" if n in seen else "" for n in lens]]
            for key, seen in sorted(by_config.items(),
                                    key=lambda kv: (kv[0][0], config_order(kv[0][1:])))]
    return header, rows
