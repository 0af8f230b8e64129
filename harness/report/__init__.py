"""Reports rendered from a run directory. Markdown for now: short enough for a PR comment."""
from __future__ import annotations

from pathlib import Path

from harness.report.markdown import render_markdown


def write_reports(run_dir: str | Path) -> list[Path]:
    """Write RUN_DIR/report.md and return the paths written."""
    path = Path(run_dir) / "report.md"
    path.write_text(render_markdown(run_dir))
    return [path]
