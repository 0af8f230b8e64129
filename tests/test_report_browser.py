"""report.html in a real browser: Playwright drives the system's headless Chromium (no browser
download), opens the page from disk and records every console message, uncaught exception and
network request. The page must load with no console error and no request other than itself;
its tables sort when a header is clicked; the roofline section is drawn with every point at or
under its roof. Screenshots of what a reader sees first, of the whole page and of the roofline
go to the test's tmp_path and results/artifacts/; with ATTNBENCH_SCREENSHOT=1 the first one also
replaces docs/report.png, the picture the README shows.

Skipped only when Chromium or Playwright is not installed (.ci/run installs both).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "results" / "artifacts"
README_SCREENSHOT = ROOT / "docs" / "report.png"
CHROMIUM = "/usr/bin/chromium"

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # the dev extra installs it
    sync_playwright = None

needs_browser = pytest.mark.skipif(
    sync_playwright is None or not Path(CHROMIUM).exists(),
    reason="needs playwright (pip install -e '.[dev]') and chromium (apt-get install chromium)")


class Watched:
    """A page with everything it logs, throws and requests kept."""

    def __init__(self, page):
        self.page = page
        self.console: list[str] = []
        self.exceptions: list[str] = []
        self.requests: list[str] = []
        page.on("console", lambda m: self.console.append(m.text)
                if m.type in ("error", "warning", "assert") else None)
        page.on("pageerror", lambda e: self.exceptions.append(str(e)))
        page.on("request", lambda r: self.requests.append(r.url))

    def open(self, url: str) -> None:
        self.url = url
        self.page.goto(url, wait_until="load")
        self.page.wait_for_timeout(300)  # late errors and requests

    def problems(self) -> dict[str, list[str]]:
        """Console errors and warnings, uncaught exceptions, and every request for anything
        but the page itself (data: URLs are inline, not requests)."""
        return {"console": self.console, "exceptions": self.exceptions,
                "requests": [u for u in self.requests
                             if u != self.url and not u.startswith("data:")]}


@pytest.fixture(scope="module")
def chromium():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium):
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    try:
        yield Watched(context.new_page())
    finally:
        context.close()


@pytest.fixture(scope="module")
def smoke_report(smoke_run):
    """The smoke suite's run (shared with test_report.py), rendered by `attnbench report`."""
    from test_report import smoke_run_dir

    out = smoke_run_dir(smoke_run)
    report = subprocess.run([sys.executable, "-m", "harness.cli", "report", str(out)],
                            check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stdout + report.stderr
    return out / "report.html"


def keep(path: Path) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, ARTIFACTS / path.name)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return path


def column_values(page, table: str, header: str) -> list[float]:
    """The data-v numbers of one column of a table, in the order the rows are shown."""
    return page.evaluate(
        """([table, header]) => {
            const t = document.getElementById(table);
            const i = Array.from(t.tHead.rows[0].cells).findIndex(
                th => th.innerText.trim().startsWith(header));
            return Array.from(t.tBodies[0].rows).map(r => parseFloat(r.cells[i].dataset.v));
        }""", [table, header])


@needs_browser
def test_report_loads_without_errors_or_requests_and_its_tables_sort(smoke_report, page,
                                                                     tmp_path):
    url = smoke_report.resolve().as_uri()
    page.open(url)
    p = page.page
    assert p.title() == "attnbench: smoke"
    # everything a reader needs is on the page, drawn: the banner first, then the figures
    verdict = p.locator("#verdict")
    assert "agree with the float64 reference" in verdict.inner_text()
    assert 0 <= verdict.bounding_box()["y"] < 1000 / 3, "the verdict banner is not at the top"
    widths = p.eval_on_selector_all(".fig svg", "s => s.map(x => x.getBoundingClientRect().width)")
    assert len(widths) >= 4 and all(w > 300 for w in widths), widths
    p.screenshot(path=str(tmp_path / "report-screenshot.png"))
    p.screenshot(path=str(tmp_path / "report-full.png"), full_page=True)
    assert keep(tmp_path / "report-screenshot.png").stat().st_size > 20_000
    keep(tmp_path / "report-full.png")
    if os.environ.get("ATTNBENCH_SCREENSHOT") == "1":
        shutil.copyfile(tmp_path / "report-screenshot.png", README_SCREENSHOT)
    # clicking a header sorts the table by that column, ascending then descending
    header = p.locator("#roofline-table th", has_text="% of roof")
    shown = column_values(p, "roofline-table", "% of roof")
    assert len(shown) >= 2
    header.click()
    assert header.get_attribute("aria-sort") == "ascending"
    assert column_values(p, "roofline-table", "% of roof") == sorted(shown)
    header.click()
    assert header.get_attribute("aria-sort") == "descending"
    assert column_values(p, "roofline-table", "% of roof") == sorted(shown, reverse=True)
    n_header = p.locator("#matrix-table th", has_text="N").first
    n_header.click()
    n_header.click()
    first_n = p.locator("#matrix-table tbody tr").first.locator("td").nth(2).inner_text()
    assert first_n == "64"  # descending: the largest seq_len of the smoke suite first
    p.wait_for_timeout(200)
    assert page.problems() == {"console": [], "exceptions": [], "requests": []}


@needs_browser
def test_the_roofline_section_is_drawn_with_every_point_under_its_roof(smoke_report, page,
                                                                      tmp_path):
    page.open(smoke_report.resolve().as_uri())
    p = page.page
    section = p.locator("#roofline")
    assert "Roofline" in section.locator("h2").inner_text()
    assert section.locator("#fig-roofline svg").bounding_box()["width"] > 300
    p.evaluate("document.querySelector('nav').style.position = 'static'")  # not over the shot
    section.scroll_into_view_if_needed()
    section.screenshot(path=str(tmp_path / "report-roofline.png"))
    keep(tmp_path / "report-roofline.png")
    achieved = column_values(p, "roofline-table", "achieved TFLOP/s")
    roof = column_values(p, "roofline-table", "roof TFLOP/s")
    pct = column_values(p, "roofline-table", "% of roof")
    assert achieved and len(achieved) == len(roof) == len(pct)
    over = [(a, r) for a, r in zip(achieved, roof) if a > r]
    assert not over, f"points above their roof: {over}"
    assert all(0 < x <= 100 for x in pct)
    assert section.locator("td.bad").count() == 0  # no cell flagged as above its roof
    assert page.problems() == {"console": [], "exceptions": [], "requests": []}


@needs_browser
def test_the_browser_check_sees_console_errors_exceptions_and_requests(page, tmp_path):
    """The checks above can fail: a page that logs an error, throws and fetches is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><title>bad</title><link rel=icon href='data:,'>"
                   "<img src='http://127.0.0.1:9/x.png'><img src='other.png'>"
                   "<script>console.error('broken'); undefinedFunction();</script>")
    url = bad.resolve().as_uri()
    page.open(url)
    found = page.problems()
    assert "broken" in found["console"]
    assert found["exceptions"] and "undefinedFunction" in found["exceptions"][0]
    assert "http://127.0.0.1:9/x.png" in found["requests"]
    assert (tmp_path / "other.png").as_uri() in found["requests"]
