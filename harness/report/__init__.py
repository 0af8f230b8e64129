"""Reports rendered from a run directory: report.html (one self-contained page with plots) and
report.md (a short GitHub-flavoured summary). Both are computed from `tables`, so they agree.

The modules, one job each: `run` loads a run directory (records, env, plan, scaling fits);
`format` prints numbers and escapes text; `shapes` labels shapes and configurations; `tables`
computes the rows of every section; `scaling` the scaling views; `method` the machine facts and
the method text (from the constants the code measures with); `plots` the figures; `html` and
`markdown` render; `gate` writes the regression gate's verdicts; `profile` the profiler summary.
"""
from __future__ import annotations

from pathlib import Path

from harness.report.run import DEFAULT_BASELINE, load_run

FORMATS = ("html", "md")


def write_reports(run_dir: str | Path, formats=FORMATS,
                  baseline: str = DEFAULT_BASELINE) -> list[Path]:
    """Write RUN_DIR/report.html and/or RUN_DIR/report.md; return the paths written."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown report format {unknown[0]!r}: expected one of {', '.join(FORMATS)}")
    run = load_run(run_dir, baseline)
    written = []
    if "html" in formats:
        from harness.report.html import render_html

        written.append(_write(run.path / "report.html", render_html(run)))
    if "md" in formats:
        from harness.report.markdown import render_markdown

        written.append(_write(run.path / "report.md",
                              render_markdown(run, with_html="html" in formats
                                              or (run.path / "report.html").exists())))
    return written


def _write(path: Path, text: str) -> Path:
    """Written whole, then renamed: a reader never sees half a report."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
