"""GitHub-flavoured Markdown summary of a run, short enough for a pull-request comment or
$GITHUB_STEP_SUMMARY: the verdict, the machine, cases per implementation, the latency table, the
scaling exponents, the problems and what did not run. Every number comes from `tables`, the
module the HTML page is rendered from, so the two reports agree.

Text from outside the harness (reasons, case ids, library versions, the CPU's name) is escaped
with `format.escape_md` or set as code with `format.code_md`, so it prints as the text it is.
"""
from __future__ import annotations

from pathlib import Path

from harness.analysis import summary
from harness.constants import FAILED_STATUSES, STATUSES
from harness.report import method, scaling, speedups, tables
from harness.report.format import code_md, escape_md, md_table
from harness.report.run import Run, load_run

ICON = {"ok": "✅", "fail": "❌", "warn": "⚠️", "empty": "⚠️"}


def _cells(rows: list[list[str]]) -> list[list[str]]:
    """Plain-text cells escaped for a table."""
    return [[escape_md(c) for c in row] for row in rows]


def _verdict(run: Run) -> list[str]:
    v = tables.verdict(run)
    out = [f"{ICON[v['level']]} **{v['headline']}**", ""]
    for i, note in enumerate(v["notes"]):  # one quote, a paragraph per note
        out += [">"] * bool(i) + [f"> {note}"]
    return out + ([""] if v["notes"] else [])


def _implementations(run: Run) -> list[str]:
    rows = tables.impl_summary(run.records)
    if not rows:
        return []
    statuses = [s for s in STATUSES
                if s not in FAILED_STATUSES or any(r[s] for r in rows)]
    header = ["impl", *statuses, "fastest in", "where fastest"]
    body = [[code_md(r["impl"]), *[str(r[s]) for s in statuses], tables.fastest_text(r),
             escape_md(r["where"])] for r in rows]
    return ["## Implementations", "", "Cases by status; *fastest in* counts the shapes that at "
            "least two implementations ran, where every implementation compared in the "
            "configuration has an ok, stable figure.", "",
            md_table(header, body, numeric=(*statuses, "fastest in")), ""]


def _latency(run: Run) -> list[str]:
    header, rows = summary.latency_table(run.records)
    if not rows:
        return ["## Median latency (ms)", "", "_No case was timed: nothing ran to completion._",
                ""]
    return ["## Median latency (ms)", "", md_table(header, _cells(rows)), "",
            f"Timed by: {tables.timers_line(run.records)} (what each timer is: report.html, "
            "*Method*).", ""]


def _bandwidth(run: Run) -> list[str]:
    header, rows = summary.bandwidth_table(run.records)
    if not rows:
        return []
    return ["## Bandwidth of the memory-bound cases (GB/s)", "", "Bound by the bytes they move "
            "(nearer the measured copy bandwidth than the matmul peak), so GB/s says how good "
            "they are: GB/s (% of the measured copy bandwidth).", "",
            md_table(header, _cells(rows)), ""]


def _comparisons(run: Run) -> list[str]:
    """The speedup summary over the baseline and what padding costs, where the run has them."""
    out = []
    summary_rows = speedups.speedup_summary(run.records, run.baseline)
    if summary_rows:
        out += [f"## Speedup over `{escape_md(run.baseline)}`", "", "Geometric mean over the "
                "shapes both ran (stable figures), and the best and worst shape of each.", "",
                md_table(["impl", "shapes", "average", "best", "where", "worst", "where"],
                         [[code_md(s["impl"]), str(s["shapes"]), s["average_text"],
                           s["best_text"], escape_md(s["best_where"]), s["worst_text"],
                           escape_md(s["worst_where"])] for s in summary_rows],
                         numeric=("shapes", "average", "best", "worst")),
                ""]
    padding = speedups.padding_overhead(run.records)
    if padding:
        out += ["## What padding costs", "", "A padded ragged batch against the same batch "
                "packed (by the same implementation where it ran packed, else the fastest, which "
                "also holds the two implementations' own difference).", "",
                md_table(["impl", "configuration", "N", "padded ms", "packed by", "packed ms",
                          "overhead"],
                         [[code_md(p["impl"]), escape_md(p["config"]), str(p["seq_len"]),
                           p["padded_ms"], code_md(p["packed_impl"]), p["packed_ms"],
                           p["overhead_text"]] for p in padding],
                         numeric=("N", "padded ms", "packed ms", "overhead")), ""]
    return out


def _compile(run: Run) -> list[str]:
    header, rows = tables.compile_times(run.records)
    if not rows:
        return []
    return ["## Compile time (s)", "", "The first call of compiled and jitted code (tracing, "
            "compilation, autotuning, one run), timed apart: never part of the latency above.",
            "", md_table(header, _cells(rows)), ""]


def _scaling(run: Run) -> list[str]:
    header, rows = scaling.scaling_table(run)
    local_header, local = scaling.local_table(run)
    title = f"## Scaling: cost ∝ N^k over the largest {run.scaling.get('fit_points')} seq_lens"
    if not rows and not local:
        gaps = scaling.scaling_gaps(run)
        if not gaps:
            return []
        return [title, "", "_No exponent: a fit needs at least 3 seq_lens with a value._ "
                + escape_md("; ".join(gaps)) + ".", ""]
    out = [title, ""]
    if run.scaling_source == "computed":
        out += ["_Computed from the records: the run wrote no scaling.json._", ""]
    if rows:
        out += ["An exponent is shown only where the points follow one power law (their "
                "residuals within their intervals, and the exponent known to ±0.5); otherwise "
                "_no single power law_, and the local exponents below say how the cost grows.",
                "", md_table(header, _cells(rows)), ""]
    notes = scaling.power_law_notes(run)
    if notes:
        out += ["<details><summary>why no single power law</summary>", ""]
        out += [f"- {escape_md(n)}" for n in notes]
        out += ["", "</details>", ""]
    if local:
        out += ["**Local exponents** between neighbouring seq_lens (± the 95% interval):", "",
                md_table(local_header, _cells(local), numeric=local_header[4:]), ""]
    crossings = scaling.crossover_lines(run)
    if crossings:  # folded: a sweep can have dozens, and the summary must stay short
        out += [f"<details><summary>{len(crossings)} crossover{'s' if len(crossings) != 1 else ''}"
                " (where one implementation overtakes another, significant on both sides)"
                "</summary>", ""]
        out += [f"- {escape_md(line)}" for line in crossings]
        out += ["", "</details>", ""]
    return out


def _problems(run: Run) -> list[str]:
    rows = tables.problems(run.records)
    if not rows:
        return []
    body = [[code_md(p["case_id"]), escape_md(p["status"]),
             escape_md(p["reason"] + (f" ({p['detail']})" if p["detail"] else ""))]
            for p in rows]
    return ["## Problems", "", md_table(["case", "status", "reason"], body), ""]


def _unstable(run: Run) -> list[str]:
    rows = tables.unstable_figures(run.records)
    if not rows:
        return []
    body = [[code_md(u["case_id"]), u["text"], str(u["remeasured"]), escape_md(u["reason"])]
            for u in rows]
    return ["## Unstable figures", "", "Marked ~ in the tables: measured under contention (even "
            "when measured again), or contradicting their neighbours in the same configuration "
            "(slower than a larger problem, or grown faster than attention can). Left out of the "
            "scaling fits; `attnbench compare` never judges them.", "",
            md_table(["case", "median (ms)", "measured again", "what was seen"], body), ""]


def _math_fallbacks(run: Run) -> list[str]:
    rows = summary.math_fallbacks(run.records)
    if not rows:
        return []
    return ["## The SDPA dispatcher fell back to math", "", summary.MATH_FALLBACK_WHY, "",
            *[f"- {escape_md(f['text'])}" for f in rows], ""]


def _not_run(run: Run) -> list[str]:
    groups = tables.not_run_by_reason(run.records)
    if not groups:
        return []
    out = ["## Not run on this machine", ""]
    for g in groups:
        who = ", ".join(code_md(i["impl"]) + ("" if i["whole"] else escape_md(
            f" ({', '.join(i['dtypes'])}, {i['cases']} of its cases)")) for i in g["impls"])
        out.append(f"- {who} ({g['cases']} cases): {escape_md(g['reason'])}")
    return out + [""]


def render_markdown(run_dir: str | Path | Run, baseline: str | None = None,
                    with_html: bool = False) -> str:
    """The summary; `with_html` adds a pointer to report.html (written beside it)."""
    run = run_dir if isinstance(run_dir, Run) else load_run(run_dir, baseline)
    env = run.env
    git = env.get("git") or {}
    packages = env.get("packages") or {}
    versions = ", ".join(f"{k} {v}" for k, v in packages.items() if v)
    out = [f"# attnbench: {escape_md(run.name)}", ""]
    out += _verdict(run)
    coverage = tables.coverage(run)
    out += [f"- machine: {escape_md(method.machine_line(env))}",
            f"- software: Python {escape_md(env.get('python', '?'))}; "
            f"{escape_md(versions or '?')}",
            f"- commit: {escape_md(git.get('commit') or 'unknown')}"
            f"{' (dirty)' if git.get('dirty') else ''}",
            f"- started: {escape_md(env.get('started_at', '?'))}"]
    if coverage:
        out.append(f"- cases: {coverage}")
    if with_html:
        out.append("- plots, spreads, memory, throughput and numerics: `report.html` beside "
                   "this file")
    out.append("")
    heads = tables.headlines(run.records, run.baseline)
    if heads:
        out += ["**Fastest at the largest N**", ""]
        out += [f"- {escape_md(tables.headline_text(h))}" for h in heads]
        out.append("")
    gone = tables.left_out(run.records)
    if gone:
        out += ["<details><summary>Left out of the headlines and 'fastest in': not every "
                "compared implementation has an ok, stable figure there</summary>", ""]
        out += [f"- {escape_md(line)}" for line in gone]
        out += ["", "</details>", ""]
    out += _math_fallbacks(run)
    out += _implementations(run)
    if run.records:
        out += _latency(run)
        out += _bandwidth(run)
        out += _comparisons(run)
        out += _compile(run)
    out += _scaling(run)
    out += _problems(run)
    out += _unstable(run)
    out += _not_run(run)
    return "\n".join(out)
