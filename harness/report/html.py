"""One self-contained HTML page per run: a Jinja2 template (autoescaped), inline CSS, a few lines
of inline JavaScript to sort tables, and every figure inline as SVG. Opened from disk it asks no
other file and no host for anything, so it can be mailed or kept as a CI artifact.

The numbers come from `tables`, as the Markdown summary's do.
"""
from __future__ import annotations

import math
import traceback
from pathlib import Path

from markupsafe import Markup

from harness.analysis import summary
from harness.analysis.roofline import TILE
from harness.analysis.scaling import FIT_CONFIDENCE
from harness.constants import FAILED_STATUSES, STATUSES
from harness.measure.timer import CONFIDENCE
from harness.report import method, plots, scaling, speedups, tables
from harness.report.format import percent
from harness.report.roofline import roofline_view
from harness.report.run import Run, load_run

TEMPLATES = Path(__file__).parent / "templates"


def _environment():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["heat"] = heat
    env.filters["speed_color"] = speed_color
    return env


def heat(rel) -> str:
    """Background for a matrix cell by its time relative to the fastest: green at 1×, through
    yellow, to red at 8× and beyond."""
    if rel is None:
        return ""
    x = min(1.0, math.log2(max(rel, 1.0)) / 3.0)
    hue = 130 - 125 * x
    return f"background:hsl({hue:.0f},65%,88%)"


def speed_color(ratio) -> str:
    """Background for a speedup: green above 1×, red below, pale near 1×."""
    if not ratio:
        return ""
    x = max(-1.0, min(1.0, math.log2(ratio) / 3.0))
    hue = 130 if x >= 0 else 5
    light = 96 - 14 * abs(x)
    return f"background:hsl({hue},60%,{light:.0f}%)"


def _section(errors: dict, name: str, build):
    """Build one section's data; a failure becomes a visible note on the page, not a traceback
    that costs the whole report."""
    try:
        return build()
    except Exception as exc:  # noqa: BLE001 — the rest of the page is still worth having
        errors[name] = f"{type(exc).__name__}: {exc}"
        errors[name + ":trace"] = traceback.format_exc(limit=3)
        return None


def context(run: Run) -> dict:
    errors: dict[str, str] = {}
    records = run.records
    speed = _section(errors, "speedup", lambda: speedups.speedup(records, run.baseline))
    roof = _section(errors, "roofline", lambda: roofline_view(run))
    return {
        "run": run,
        "title": f"attnbench: {run.name}",
        "verdict": tables.verdict(run),
        "machine": method.machine(run.env),
        "machine_line": method.machine_line(run.env),
        "commit": ((run.env.get("git") or {}).get("commit") or "unknown")[:12],
        "dirty": bool((run.env.get("git") or {}).get("dirty")),
        "summary": _section(errors, "summary", lambda: tables.impl_summary(records)),
        "headlines": _section(errors, "summary", lambda: [
            tables.headline_text(h) for h in tables.headlines(records, run.baseline)]),
        "left_out": _section(errors, "summary", lambda: tables.left_out(records)),
        "math_fallbacks": _section(errors, "math_fallbacks",
                                   lambda: summary.math_fallbacks(records)),
        "math_fallback_why": summary.MATH_FALLBACK_WHY,
        "matrix": _section(errors, "matrix", lambda: tables.matrix(records)),
        "compile": _section(errors, "compile", lambda: tables.compile_times(records)),
        "bandwidth": _section(errors, "bandwidth", lambda: summary.bandwidth_table(records)),
        "latency_svg": _svg(_section(errors, "latency", lambda: plots.latency(run))),
        "scaling": _section(errors, "latency", lambda: scaling.scaling_table(run)),
        "scaling_gaps": _section(errors, "latency", lambda: scaling.scaling_gaps(run)),
        "crossovers": _section(errors, "latency", lambda: scaling.crossover_lines(run)),
        "local": _section(errors, "latency", lambda: scaling.local_table(run)),
        "power_law_notes": _section(errors, "latency", lambda: scaling.power_law_notes(run)),
        "roofline": roof,
        "roofline_svg": _svg(_section(errors, "roofline", lambda: plots.roofline(run, roof)))
        if roof else None,
        "memory_svg": _svg(_section(errors, "memory", lambda: plots.memory(run))),
        "throughput": _section(errors, "throughput", lambda: tables.throughput(records, run.env)),
        "throughput_svg": _svg(_section(errors, "throughput", lambda: plots.throughput(run))),
        "speedup": speed,
        "speedup_summary": _section(errors, "speedup",
                                    lambda: speedups.speedup_summary(records, run.baseline)),
        "padding_overhead": _section(errors, "padding",
                                     lambda: speedups.padding_overhead(records)),
        "speedup_svg": _svg(_section(errors, "speedup", lambda: plots.speedup_heatmap(speed)))
        if speed else None,
        "numerics": _section(errors, "numerics", lambda: tables.numerics(records)),
        "problems": _section(errors, "problems", lambda: tables.problems(records)),
        "unstable": _section(errors, "unstable", lambda: tables.unstable_figures(records)),
        "not_run": _section(errors, "not_run", lambda: tables.not_run_by_reason(records)),
        "method": _section(errors, "method", lambda: method.method(run)),
        "statuses": list(STATUSES),
        "failed_statuses": list(FAILED_STATUSES),
        "confidence": percent(CONFIDENCE),
        "fit_confidence": percent(FIT_CONFIDENCE),
        "has_ok": any(r["status"] == "ok" for r in records),
        "has_memory": any(r["status"] == "ok" and r["peak_mem_bytes"] for r in records),
        "errors": errors,
        "heatmap_cap": plots.MAX_HEATMAP_ROWS,
        "roofline_tile": TILE,
    }


def _svg(text):
    return Markup(text) if text else None


def render_html(run_dir: str | Path | Run, baseline: str | None = None) -> str:
    run = run_dir if isinstance(run_dir, Run) else load_run(run_dir, baseline)
    return _environment().get_template("report.html.j2").render(**context(run))
