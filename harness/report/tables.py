"""What both reports show, computed once: the HTML page and the Markdown summary render these
rows, so their numbers cannot disagree. Framework-free (records are plain dicts).

Everything here tolerates the runs people really have: no records, only unsupported or failed
cases, a run cut off half way (no scaling.json, a half-written last line), one implementation,
one seq_len. A section with nothing to show gets rows that are empty, and the renderers say what
is missing instead of drawing nothing.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from harness import summary
from harness.scaling import sort_key
from harness.store import FAILED_STATUSES, RECORD_FIELDS, RESULTS, STATUSES, load_env, load_records

DEFAULT_BASELINE = "torch.naive"
MIB = 2.0 ** 20
ITEMSIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}

# A shape is everything that fixes the problem an implementation is asked to solve; a
# configuration is a shape without its sequence lengths (one line of a seq_len sweep).
CONFIG_FIELDS = ("level", "mode", "device", "dtype", "batch", "heads", "head_dim", "causal")
OPTIONAL_AXES = ("level", "mode", "device", "batch", "heads", "head_dim")


# ---- formatting: one place, so both reports print the same digits ----------------------

def fmt_ms(seconds) -> str:
    return "" if seconds is None else summary.ms(seconds)


def fmt_mib(nbytes) -> str:
    if nbytes is None:
        return ""
    value = nbytes / MIB
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}" if value >= 0.01 else f"{value:.2g}"


def fmt_tflops(value) -> str:
    if value is None:
        return ""
    return f"{value:.3g}" if value >= 0.001 else f"{value:.2e}"


def fmt_pct(value) -> str:
    if value is None:
        return ""
    return f"{value:.1f}%" if value >= 0.1 else f"{value:.2g}%"


def fmt_ratio(value) -> str:
    if value is None:
        return ""
    if value >= 100:
        return f"{value:.0f}×"
    return f"{value:.2f}×" if value >= 0.1 else f"{value:.2g}×"


def fmt_err(value) -> str:
    return "" if value is None else f"{value:.2e}"


def fmt_seconds(value) -> str:
    """A duration with its unit: 50 µs, 5 ms, 0.4 s, 120 s."""
    if value is None:
        return "?"
    value = float(value)
    if value < 1e-3:
        return f"{value * 1e6:.3g} µs"
    if value < 0.1:
        return f"{value * 1e3:.3g} ms"
    return f"{value:.3g} s"


def fmt_exponent(value) -> str:
    return "" if value is None else f"{value:.2f}"


def mask_name(causal) -> str:
    return "causal" if causal else "full"


def _num(value) -> float | None:
    """A finite number, or None (JSON null, NaN, inf, a string)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None




# ---- loading ------------------------------------------------------------------------

@dataclass
class Run:
    """One run directory as the reports see it."""
    path: Path
    records: list[dict]
    env: dict
    baseline: str = DEFAULT_BASELINE
    scaling: dict = field(default_factory=dict)
    scaling_source: str = ""          # "scaling.json", "computed" or "" (nothing to fit)
    cut_line: bool = False            # results.jsonl ends in a half-written record
    expected: int | None = None       # cases the run set out to record, when that can be known
    missing: list[str] = field(default_factory=list)
    timing: dict = field(default_factory=dict)
    timing_source: str = ""

    @property
    def name(self) -> str:
        return self.env.get("suite") or self.path.name


def load_run(run_dir: str | Path, baseline: str | None = None) -> Run:
    path = Path(run_dir)
    records = [{**dict.fromkeys(RECORD_FIELDS), **r} for r in load_records(path)]
    for r in records:
        r["reason"] = r["reason"] or ""
        if r["status"] not in STATUSES:
            r["status"] = "error"
            r["reason"] = r["reason"] or "record without a known status"
    try:
        env = load_env(path) or {}
    except ValueError:  # a damaged env.json costs the machine facts, not the report
        env = {}
    run = Run(path=path, records=records, env=env if isinstance(env, dict) else {},
              baseline=baseline or DEFAULT_BASELINE)
    raw = (path / RESULTS).read_bytes() if (path / RESULTS).exists() else b""
    run.cut_line = bool(raw) and not raw.endswith(b"\n")
    run.scaling, run.scaling_source = _scaling(path, records)
    run.timing, run.timing_source, expected = _plan(path, run.env)
    if expected is not None:
        recorded = {r["case_id"] for r in records}
        run.expected = len(expected)
        run.missing = sorted(expected - recorded)
    return run


def _scaling(path: Path, records: list[dict]) -> tuple[dict, str]:
    """scaling.json as the run wrote it; computed from the records when the run never got there."""
    from harness import scaling

    file = path / scaling.SCALING
    if file.exists():
        try:
            data = json.loads(file.read_text())
            if isinstance(data.get("fits"), list):
                data.setdefault("crossovers", [])
                data.setdefault("fit_points", scaling.FIT_POINTS)
                return data, "scaling.json"
        except (OSError, ValueError):
            pass
    if not any(r["status"] == "ok" for r in records):
        return {"fit_points": scaling.FIT_POINTS, "fits": [], "crossovers": []}, ""
    return ({"fit_points": scaling.FIT_POINTS, "fits": scaling.fits(records),
             "crossovers": scaling.crossovers(records, min_ratio=scaling.CROSSOVER_MARGIN)},
            "computed")


def _plan(path: Path, env: dict) -> tuple[dict, str, set | None]:
    """The timing settings the run used and the case ids it meant to record.

    Both come from the run's copy of its suite (suite.toml) and the command line kept in
    env.json, read with the CLI's own parser and filters; when either is missing or no longer
    parses, the timing falls back to the suite's [timing] table or the defaults and the
    expected cases stay unknown.
    """
    import dataclasses

    from harness.timing import TimingSettings

    settings = dataclasses.asdict(TimingSettings())
    source = "the harness defaults (the run directory has no suite.toml)"
    suite_file = path / "suite.toml"
    if suite_file.exists():
        try:
            import tomllib

            table = tomllib.loads(suite_file.read_text()).get("timing", {})
            settings.update({k: v for k, v in table.items() if k in settings})
            source = "suite.toml in the run directory"
        except (OSError, ValueError):
            source = "the harness defaults (suite.toml did not parse)"
    argv = env.get("argv") or []
    if not suite_file.exists() or len(argv) < 2 or argv[1] != "run":
        return settings, source, None
    try:
        from harness import registry
        from harness.cli import build_parser, filter_cases
        from harness.spec import load_suite

        args = build_parser().parse_args([str(a) for a in argv[1:]])
        overrides = {k: v for k, v in (("budget_s", args.budget), ("timeout_s", args.timeout),
                                       ("target_ci", args.target_ci)) if v is not None}
        if overrides:
            settings.update(overrides)
            source += " and the command line (" + ", ".join(overrides) + ")"
        known = set(registry.adapters())
        suite = load_suite(str(suite_file), known)
        expected = {c.case_id for c in filter_cases(suite.cases(), args, known)}
    except Exception:  # an old or hand-made run directory: the plan is simply unknown
        return settings, source, None
    return settings, source, expected


# ---- verdict and per-implementation summary --------------------------------------------

def _plural(n: int, word: str) -> str:
    if word == "oom":
        return f"{n} out of memory"
    if word == "mismatch":
        return f"{n} mismatch" + ("es" if n != 1 else "")
    return f"{n} {word}" + ("s" if n != 1 else "")


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
        parts = [_plural(counts[s], s) for s in FAILED_STATUSES if counts[s]]
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
    if run.missing:
        argv = [str(a) for a in (run.env.get("argv") or [])[1:]]
        if not any(a == "--out" or a.startswith("--out=") for a in argv):
            argv += ["--out", str(run.path)]
        if "--resume" not in argv:
            argv.append("--resume")
        notes.append(f"Incomplete run: {len(records)} of {run.expected} cases recorded, "
                     f"{len(run.missing)} missing (interrupted, or still running). Finish it "
                     f"with `attnbench {' '.join(argv)}`.")
    elif records and run.scaling_source != "scaling.json" and run.expected is None:
        notes.append("This run has no scaling.json, which a finished run writes: it was "
                     "probably interrupted, so some cases may be missing.")
    if run.cut_line:
        notes.append("The last line of results.jsonl was cut off mid-write and is ignored.")
    if level == "fail" and counts["ok"]:
        notes.append(f"{counts['ok']} cases agree with the float64 reference.")
    return {"level": level, "headline": headline, "notes": notes, "counts": counts,
            "total": len(records)}


def shape_key(r: dict) -> tuple:
    return (*(r[k] for k in CONFIG_FIELDS), r["seq_len"], r["seq_len_kv"], r["seed"])


def _sort_key(key: tuple) -> tuple:
    level, mode, device, dtype, batch, heads, head_dim, causal, n, nkv, seed = key
    return tuple(sort_key(v) for v in (level, mode, device, dtype, causal, batch, heads, head_dim,
                                      n, nkv, seed))


def _varying(records: list[dict]) -> list[str]:
    return [k for k in OPTIONAL_AXES if len({r[k] for r in records}) > 1]


def shape_columns(records: list[dict]) -> list[str]:
    """Label columns of a shape: dtype, mask, the axes that vary in the run, then N."""
    extra = _varying(records)
    cols = ["dtype", "mask", *extra, "N"]
    if any(r["seq_len_kv"] not in (None, r["seq_len"]) for r in records):
        cols.append("N kv")
    if len({r["seed"] for r in records}) > 1:
        cols.append("seed")
    return cols


def shape_labels(key: tuple, columns: list[str]) -> list[str]:
    values = dict(zip((*CONFIG_FIELDS, "N", "N kv", "seed"), key))
    values["mask"] = mask_name(values["causal"])
    return [str(values[c]) for c in columns]


def config_label(r: dict, varying: list[str]) -> str:
    """"float32 causal" plus the axes that vary in the run (e.g. "mode=fwd_bwd")."""
    parts = [str(r["dtype"]), mask_name(r["causal"])]
    parts += [f"{k}={r[k]}" for k in varying]
    return " ".join(parts)


def impls_of(records: list[dict]) -> list[str]:
    return sorted({r["impl"] for r in records})


def fastest_by_shape(records: list[dict]) -> dict[tuple, dict]:
    """{shape: {"impl": fastest, "median_s": its median, "n": how many impls ran it}}."""
    best: dict[tuple, dict] = {}
    for r in records:
        med = _num(r["median_s"]) if r["status"] == "ok" else None
        if med is None or med <= 0:
            continue
        key = shape_key(r)
        entry = best.setdefault(key, {"impl": r["impl"], "median_s": med, "impls": set()})
        entry["impls"].add(r["impl"])
        if med < entry["median_s"]:
            entry.update(impl=r["impl"], median_s=med)
    return {k: {"impl": v["impl"], "median_s": v["median_s"], "n": len(v["impls"])}
            for k, v in best.items()}


def impl_summary(records: list[dict]) -> list[dict]:
    """Per implementation: cases by status and where it was the fastest.

    A shape counts as won only when at least two implementations ran it.
    """
    best = fastest_by_shape(records)
    contested = {k: v for k, v in best.items() if v["n"] > 1}
    varying = _varying(records)
    by_key = {shape_key(r): r for r in records}
    rows = []
    for impl in impls_of(records):
        mine = [r for r in records if r["impl"] == impl]
        counts = Counter(r["status"] for r in mine)
        won = sorted((k for k, v in contested.items() if v["impl"] == impl), key=_sort_key)
        ok_keys = {shape_key(r) for r in mine if r["status"] == "ok"}
        ran = [k for k in contested if k in ok_keys]
        where: dict[str, list[str]] = {}
        for k in won:
            r = by_key[k]
            where.setdefault(config_label(r, varying), []).append(str(r["seq_len"]))
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

def cell(r: dict | None, best: dict | None) -> dict:
    """One matrix cell: the median with its spread and its time relative to the fastest."""
    if r is None:
        return {"status": None, "text": "", "title": "not in this run"}
    if r["status"] != "ok" or _num(r["median_s"]) is None:
        text = summary.CELL_FOR_STATUS.get(r["status"], r["status"])
        return {"status": r["status"], "text": text, "title": r["reason"] or r["status"]}
    med = _num(r["median_s"])
    low, high = _num(r["ci_low_s"]), _num(r["ci_high_s"])
    spread = (high - low) / 2 / med * 100 if low is not None and high is not None and med else None
    rel = med / best["median_s"] if best else None
    title = f"median {fmt_ms(med)} ms"
    if low is not None and high is not None:
        title += f", 95% CI [{fmt_ms(low)}, {fmt_ms(high)}] ms"
    if _num(r["iqr_s"]) is not None:
        title += f", IQR {fmt_ms(r['iqr_s'])} ms"
    title += f", {r['n_samples']} samples"
    if r["converged"] is False:
        title += "; did not reach the target CI within its budget"
    return {"status": "ok", "median_s": med, "text": fmt_ms(med),
            "spread": spread, "spread_text": "" if spread is None else f"±{spread:.1f}%" if spread < 10
            else f"±{spread:.0f}%",
            "rel": rel, "rel_text": fmt_ratio(rel), "fastest": rel is not None and rel <= 1.0,
            "converged": r["converged"] is not False, "title": title}


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
    for key in sorted(by_shape, key=_sort_key):
        rows.append({"labels": shape_labels(key, columns),
                     "cells": [cell(by_shape[key].get(i), best.get(key)) for i in impls]})
    return {"columns": columns, "impls": impls, "rows": rows}


# ---- speedup over a baseline ---------------------------------------------------------

def speedup(records: list[dict], baseline: str) -> dict:
    """baseline median / impl median per shape the baseline ran: above 1 is faster."""
    ok = [r for r in records if r["status"] == "ok" and (_num(r["median_s"]) or 0) > 0]
    base = {shape_key(r): _num(r["median_s"]) for r in ok if r["impl"] == baseline}
    present = any(r["impl"] == baseline for r in records)
    others = [i for i in impls_of(ok) if i != baseline]
    result = {"baseline": baseline, "present": present, "ran": bool(base), "impls": others,
              "columns": [], "rows": [], "available": impls_of(ok)}
    if not base or not others:
        return result
    by_shape: dict[tuple, dict[str, float]] = {}
    for r in ok:
        if shape_key(r) in base and r["impl"] != baseline:
            by_shape.setdefault(shape_key(r), {})[r["impl"]] = _num(r["median_s"])
    columns = shape_columns([r for r in ok if shape_key(r) in base])
    rows = []
    for key in sorted(base, key=_sort_key):
        ratios = [base[key] / by_shape[key][i] if i in by_shape.get(key, {}) else None
                  for i in others]
        rows.append({"labels": shape_labels(key, columns), "ratios": ratios,
                     "texts": [fmt_ratio(x) for x in ratios]})
    result.update(columns=columns, rows=rows)
    return result


# ---- throughput --------------------------------------------------------------------

def throughput(records: list[dict], env: dict) -> dict:
    """TFLOP/s and percent of the measured matmul peak, per (impl, configuration) and N."""
    ok = [r for r in records if r["status"] == "ok" and _num(r["tflops"]) is not None]
    varying = _varying(ok)
    seq_lens = sorted({r["seq_len"] for r in ok})
    rows: dict[tuple, dict] = {}
    for r in ok:
        key = (r["impl"], *(r[k] for k in CONFIG_FIELDS))
        row = rows.setdefault(key, {"impl": r["impl"], "config": config_label(r, varying),
                                    "cells": {}, "dtype": r["dtype"], "device": r["device"]})
        pct = _num(r["pct_of_peak"])
        row["cells"][r["seq_len"]] = {"tflops": _num(r["tflops"]), "pct": pct,
                                      "text": fmt_tflops(_num(r["tflops"])),
                                      "pct_text": fmt_pct(pct)}
    ordered = [rows[k] for k in sorted(rows, key=lambda k: tuple(sort_key(v) for v in k))]
    for row in ordered:
        best = max(row["cells"].values(), key=lambda c: c["tflops"])
        row["best"] = best
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
               or (r["status"] == "ok" and _num(r["max_abs_err"]) is not None)]
    groups: dict[tuple, list[dict]] = {}
    for r in checked:
        groups.setdefault((r["impl"], r["dtype"]), []).append(r)
    rows = []
    for (impl, dtype), rs in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        errs = [_num(r["max_abs_err"]) for r in rs if _num(r["max_abs_err"]) is not None]
        rels = [_num(r["rel_err"]) for r in rs if _num(r["rel_err"]) is not None]
        tols = [_num(r["tolerance"]) for r in rs if _num(r["tolerance"]) is not None]
        ratios = [_num(r["max_abs_err"]) / _num(r["tolerance"]) for r in rs
                  if _num(r["max_abs_err"]) is not None and _num(r["tolerance"])]
        nonfinite = any(r["max_abs_err"] is not None and _num(r["max_abs_err"]) is None
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

def not_run(records: list[dict]) -> list[dict]:
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
        if r["status"] == "mismatch" and _num(r["max_abs_err"]) is not None:
            detail.append(f"max_abs_err {fmt_err(r['max_abs_err'])} > tolerance "
                          f"{fmt_err(_num(r['tolerance']))}")
        if r["status"] == "oom":
            if _num(r["oom_bytes"]):
                detail.append(f"asked for {fmt_mib(r['oom_bytes'])} MiB")
            if r["predicted"]:
                detail.append("predicted from a smaller seq_len, not tried")
        rows.append({"case_id": r["case_id"], "impl": r["impl"], "status": r["status"],
                     "seq_len": r["seq_len"], "dtype": r["dtype"],
                     "reason": r["reason"], "detail": "; ".join(detail)})
    order = {s: i for i, s in enumerate(FAILED_STATUSES)}
    rows.sort(key=lambda x: (order.get(x["status"], 9), x["impl"], sort_key(x["seq_len"])))
    return rows


# ---- scaling -----------------------------------------------------------------------

def scaling_table(run: Run) -> tuple[list[str], list[list[str]]]:
    from harness.scaling import format_fits

    fitted = [f for f in run.scaling.get("fits", []) if f.get("exponent") is not None]
    return format_fits(fitted) if fitted else ([], [])


def scaling_gaps(run: Run) -> list[str]:
    """Why some implementations have no exponent (fewer than 3 seq_lens with a value)."""
    notes = {}
    for f in run.scaling.get("fits", []):
        if f.get("exponent") is None and f.get("metric") == "time":
            notes.setdefault(f.get("note") or "not enough points", set()).add(f["impl"])
    return [f"{', '.join(sorted(impls))}: {note}" for note, impls in sorted(notes.items())]


def fit_lookup(run: Run) -> dict[tuple, dict]:
    """{(impl, metric, config...): fit row} for the plots' legends."""
    out = {}
    for f in run.scaling.get("fits", []):
        key = (f.get("impl"), f.get("metric"), *(f.get(k) for k in CONFIG_FIELDS))
        if f.get("kv_equals_seq_len", True):
            out[key] = f
    return out


def crossover_lines(run: Run) -> list[str]:
    return [f"{c['faster_above']} overtakes {c['faster_below']} near seq_len {c['seq_len']} "
            f"({c['metric']}, {c['dtype']}, {mask_name(c['causal'])})"
            for c in run.scaling.get("crossovers", [])]


# ---- the machine and the method ---------------------------------------------------------

def machine(env: dict) -> list[tuple[str, str]]:
    git = env.get("git") or {}
    commit = git.get("commit") or "unknown"
    if git.get("dirty"):
        commit += " (with uncommitted changes)"
    gpus = env.get("gpus") or []
    rows = [("suite", str(env.get("suite", "?"))),
            ("started", str(env.get("started_at", "?")))]
    if env.get("resumed_at"):
        rows.append(("resumed", ", ".join(map(str, env["resumed_at"]))))
    rows += [("git commit", commit),
             ("CPU", f"{env.get('cpu', '?')} ({env.get('physical_cores', '?')} physical cores, "
                     f"{env.get('logical_cores', '?')} logical)"),
             ("GPU", "; ".join(f"{g.get('name')} (driver {g.get('driver')}, {g.get('memory')})"
                               for g in gpus) or "none"),
             ("threads", f"{env.get('threads', '?')} intra-op threads for every framework")]
    workers = env.get("workers") or {}
    if workers:
        rows.append(("workers", "; ".join(
            f"{name}: {info.get('threads', '?')} threads" + (
                f", CUDA {info['cuda']}" if info.get("cuda") else "")
            for name, info in sorted(workers.items()))))
    rows.append(("Python", f"{env.get('python', '?')} on {env.get('platform', '?')}"))
    packages = env.get("packages") or {}
    rows.append(("packages", ", ".join(f"{k} {v}" for k, v in packages.items() if v) or "?"))
    missing = [k for k, v in packages.items() if not v]
    if missing:
        rows.append(("not installed", ", ".join(missing)))
    for device, entry in sorted((env.get("peaks") or {}).items()):
        parts = [f"{dtype} matmul {fmt_tflops(v)} TFLOP/s"
                 for dtype, v in sorted((entry.get("matmul_tflops") or {}).items())]
        if entry.get("bandwidth_gbs"):
            parts.append(f"copy bandwidth {entry['bandwidth_gbs']:.1f} GB/s")
        parts += [f"{dtype}: {err}" for dtype, err in sorted((entry.get("errors") or {}).items())]
        rows.append((f"measured peaks ({device})", "; ".join(parts)))
    if not env.get("peaks"):
        rows.append(("measured peaks", "not measured in this run"))
    if env.get("mem_limit_bytes"):
        rows.append(("memory limit", f"{fmt_mib(env['mem_limit_bytes'])} MiB per case"))
    if env.get("argv"):
        rows.append(("command", " ".join(map(str, env["argv"]))))
    return rows


def machine_line(env: dict) -> str:
    """One line: CPU, threads, GPU."""
    gpus = env.get("gpus") or []
    line = f"{env.get('cpu', '?')}, {env.get('threads', '?')} threads"
    if gpus:
        line += ", GPU " + ", ".join(g.get("name", "?") for g in gpus)
    return line


MEM_METHODS = {
    "memray": "memray's native-allocation tracker (sees malloc/mmap of torch's and NumPy's "
              "allocators): the peak of the call's own allocations",
    "torch.cuda.max_memory_allocated": "torch's CUDA caching allocator counters: tensor bytes "
                                       "allocated during the call, not the reserved cache",
    "tf.config.experimental.get_memory_info": "TensorFlow's allocator counters (a pool: a reused "
                                              "chunk can count up to 2× its request)",
}


def method(run: Run) -> list[tuple[str, str]]:
    """How the numbers were measured, from the settings and constants the run used."""
    from harness import flops, reference
    from harness.scaling import CROSSOVER_MARGIN, FIT_POINTS

    t = run.timing
    gpu = any(str(r["device"]).startswith("cuda") for r in run.records)
    floors = ", ".join(f"{d} {v:g}" for d, v in reference.ABS_FLOOR.items())
    variants: dict[str, set] = {}
    for r in run.records:
        if r["mem_method"]:
            base, _, rest = str(r["mem_method"]).partition(" ")
            variants.setdefault(base, set()).add(rest.strip(" ()"))
    mem_text = "; ".join(
        f"{base}: {MEM_METHODS.get(base, 'as named')}"
        + "".join(f" ({note})" for note in sorted(notes) if note)
        for base, notes in sorted(variants.items())) or "no memory was measured in this run"
    return [
        ("timer", "time.perf_counter_ns around each sample, with the device synchronised before "
                  "the clock is read" + (" (CUDA work included)" if gpu else "")
                  + "; the garbage collector is paused while sampling; each case runs in a "
                    "worker process of its framework, one at a time"),
        ("warm-up", f"the call runs for {fmt_seconds(t.get('warmup_s'))} (at least 2 calls) and those calls "
                    "are discarded"),
        ("sampling", f"calls shorter than {fmt_seconds(t.get('min_sample_s'))} are timed in blocks and "
                     f"divided; samples are taken until the 95% confidence interval of the median "
                     f"(order statistics, distribution-free) is within ±{t.get('target_ci', 0):.0%} "
                     f"of the median, or {fmt_seconds(t.get('budget_s'))} of sampling is spent, or "
                     f"{t.get('max_samples')} samples are taken, never fewer than "
                     f"{t.get('min_samples')}; a case is killed after {fmt_seconds(t.get('timeout_s'))}. "
                     f"Settings from {run.timing_source}."),
        ("statistics", "the median of the samples with its 95% CI (shown as ±% of the median, "
                       "the CI's half-width) and the interquartile range; a † marks a case whose "
                       "interval did not reach the target within its budget"),
        ("FLOPs", f"4·D per unmasked score entry per (batch, head): 2·D for Q·Kᵀ and 2·D for P·V, "
                  f"softmax not counted; causal counts only the entries its mask keeps "
                  f"(N·(N+1)/2, top-left aligned); backward is {flops.BACKWARD_FACTOR:g}× forward. "
                  "TFLOP/s = FLOPs / median; percent of peak is over the matmul throughput "
                  "measured on this machine, per device and dtype"),
        ("tolerance", f"each output is compared with a float64 reference of the same inputs; "
                      f"max_abs_err must be at most max(floor, {reference.TOLERANCE_FACTOR:g} × "
                      f"the error of a naive computation in the case's dtype), floors: {floors}. "
                      "A wrong shape, a wrong output dtype or NaN/Inf is also a mismatch; "
                      "rel_err is the Frobenius norm of the difference over the reference's"),
        ("memory", "a pass of its own after timing: the extra memory one call needs beyond its "
                   f"inputs (temporaries and output). Methods in this run: {mem_text}"),
        ("scaling", f"log(median) and log(peak memory) fitted against log(N) over the largest "
                    f"{FIT_POINTS} seq_lens, exponent with its 95% CI (Student's t); crossovers "
                    f"interpolated in log-log space, orders within "
                    f"{(CROSSOVER_MARGIN - 1):.0%} count as ties"),
    ]


# ---- headlines ---------------------------------------------------------------------

def headlines(records: list[dict], baseline: str) -> list[dict]:
    """Per configuration, at its largest seq_len that something ran: the fastest implementation,
    its median, and how it compares with the baseline and with the slowest."""
    ok = [r for r in records if r["status"] == "ok" and (_num(r["median_s"]) or 0) > 0]
    varying = _varying(ok)
    configs: dict[tuple, list[dict]] = {}
    for r in ok:
        square = r["seq_len_kv"] in (None, r["seq_len"])
        configs.setdefault((*shape_key(r)[:8], square, r["seed"]), []).append(r)
    out = []
    for key in sorted(configs, key=lambda k: tuple(sort_key(v) for v in
                                                   (k[0], k[1], k[2], k[3], k[7], *k[4:7]))):
        rs = configs[key]
        top = max(r["seq_len"] for r in rs)
        at = [r for r in rs if r["seq_len"] == top]
        best = min(at, key=lambda r: r["median_s"])
        worst = max(at, key=lambda r: r["median_s"])
        base = next((r for r in at if r["impl"] == baseline), None)
        line = {"config": config_label(best, varying), "seq_len": top, "impl": best["impl"],
                "median_s": best["median_s"], "text": fmt_ms(best["median_s"]),
                "impls": len({r["impl"] for r in at}), "baseline": baseline,
                "vs_baseline": (base["median_s"] / best["median_s"]) if base and base is not best
                else None,
                "slowest": worst["impl"] if worst is not best else None,
                "vs_slowest": worst["median_s"] / best["median_s"] if worst is not best else None}
        out.append(line)
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
