"""report.html in a real browser: headless Chromium opens it from disk, and the Chrome DevTools
Protocol (over --remote-debugging-pipe, so no websocket library is needed) reports every console
message, uncaught exception, log entry and network request. The page must load with no console
error and no request other than itself; a screenshot of what a reader sees first is saved to
the test's tmp_path and results/artifacts/report-screenshot.png.

Skipped only when Chromium is not installed (.ci/run installs Debian's `chromium`).
"""
from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "results" / "artifacts"
CHROMIUM = next((p for p in (shutil.which("chromium"), "/usr/bin/chromium",
                             shutil.which("chromium-browser")) if p and Path(p).exists()), None)

needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed "
                                    "(apt-get install chromium; .ci/run does it)")


class Browser:
    """Headless Chromium driven over the DevTools pipe (fd 3: commands in, fd 4: events out)."""

    def __init__(self, width=1400, height=1000, timeout=30.0):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="attnbench-chromium-")
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def wire_pipes():  # in the child, before exec: commands on fd 3, replies on fd 4
            a, b = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(a, 103)
            os.dup2(b, 104)
            os.dup2(103, 3)
            os.dup2(104, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--disable-extensions",
             "--disable-default-apps", "--mute-audio", "--remote-debugging-pipe",
             f"--window-size={width},{height}", f"--user-data-dir={self.profile}",
             "about:blank"],
            close_fds=False, preexec_fn=wire_pipes,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._next = 0
        self.events: list[dict] = []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget",
                                 {"targetId": target, "flatten": True})["sessionId"]
        self.width, self.height = width, height

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_chrome], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buf += chunk
        message, self._buf = self._buf.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, session: bool | None = None) -> dict:
        self._next += 1
        message = {"id": self._next, "method": method, "params": params or {}}
        if session is None:
            session = hasattr(self, "session")
        if session:
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str) -> dict:
        deadline = time.monotonic() + self.timeout
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._read(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event

    def drain(self, seconds: float) -> None:
        """Collect events for a while (late requests, errors raised after load)."""
        deadline = time.monotonic() + seconds
        try:
            while True:
                self.events.append(self._read(deadline))
        except TimeoutError:
            pass

    def open(self, url: str) -> None:
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride", {
            "width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False})
        self.call("Page.navigate", {"url": url})
        self.wait_for("Page.loadEventFired")
        self.drain(0.5)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path, full_page: bool = False) -> Path:
        params = {"format": "png"}
        if full_page:
            size = self.call("Page.getLayoutMetrics")["cssContentSize"]
            params.update(captureBeyondViewport=True, clip={
                "x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})
        data = self.call("Page.captureScreenshot", params)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def problems(self, page_url: str) -> dict[str, list[str]]:
        """Console errors/warnings, uncaught exceptions, error log entries, and every request
        for anything but the page itself (data: URLs are inline, not requests)."""
        out = {"console": [], "exceptions": [], "log": [], "requests": []}
        for e in self.events:
            method, p = e.get("method"), e.get("params", {})
            if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert",
                                                                          "warning"):
                out["console"].append(" ".join(str(a.get("value", a.get("description")))
                                               for a in p.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                details = p.get("exceptionDetails", {})
                out["exceptions"].append(details.get("exception", {}).get("description")
                                         or details.get("text", "?"))
            elif method == "Log.entryAdded" and p["entry"].get("level") in ("error", "warning"):
                out["log"].append(f"{p['entry'].get('source')}: {p['entry'].get('text')} "
                                  f"{p['entry'].get('url', '')}")
            elif method == "Network.requestWillBeSent":
                url = p["request"]["url"]
                if url != page_url and not url.startswith("data:"):
                    out["requests"].append(url)
        return out

    def close(self) -> None:
        try:
            self.call("Browser.close", session=False)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_chrome, self._from_chrome):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture
def browser():
    b = Browser()
    try:
        yield b
    finally:
        b.close()


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory):
    """The smoke suite's run (shared with test_report.py), rendered by `attnbench report`."""
    from test_report import smoke_run_dir

    out = smoke_run_dir(tmp_path_factory)
    report = subprocess.run([sys.executable, "-m", "harness.cli", "report", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stdout + report.stderr
    return out / "report.html"


@needs_chromium
def test_report_loads_in_chromium_without_errors_or_requests(smoke_report, browser, tmp_path):
    url = smoke_report.resolve().as_uri()
    browser.open(url)
    assert browser.evaluate("document.readyState") == "complete"
    assert browser.evaluate("document.title") == "attnbench: smoke"
    # everything a reader needs is on the page, drawn: the banner first, then the figures
    assert "agree with the float64 reference" in browser.evaluate(
        "document.getElementById('verdict').innerText")
    banner_top = browser.evaluate("document.getElementById('verdict').getBoundingClientRect().top")
    assert 0 <= banner_top < browser.height / 3, "the verdict banner is not at the top of the page"
    widths = browser.evaluate(
        "Array.from(document.querySelectorAll('.fig svg')).map(s => s.getBoundingClientRect().width)")
    assert len(widths) >= 3 and all(w > 300 for w in widths), widths
    # what a reader sees first, and the whole page, kept as artifacts
    shot = browser.screenshot(tmp_path / "report-screenshot.png")
    full = browser.screenshot(tmp_path / "report-full.png", full_page=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, ARTIFACTS / "report-screenshot.png")
    shutil.copyfile(full, ARTIFACTS / "report-full.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    # the sortable tables work (a click re-orders, and raises nothing)
    n_column = ("Array.from(document.querySelectorAll('#matrix-table th'))"
                ".find(th => th.innerText.trim().startsWith('N'))")
    first_n = "document.querySelector('#matrix-table tbody tr').cells[2].innerText"
    assert browser.evaluate(first_n) == "32"
    browser.evaluate(f"{n_column}.click(); {n_column}.click()")
    assert browser.evaluate(f"{n_column}.getAttribute('aria-sort')") == "descending"
    assert browser.evaluate(first_n) == "64"
    browser.drain(0.3)


    assert browser.problems(url) == {"console": [], "exceptions": [], "log": [], "requests": []}


@needs_chromium
def test_the_browser_check_sees_console_errors_and_requests(browser, tmp_path):
    """The check above can fail: a page that logs an error, throws and fetches is caught."""
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><title>bad</title><link rel=icon href='data:,'>"
                    "<img src='http://127.0.0.1:9/x.png'><img src='other.png'>"
                    "<script>console.error('broken'); undefinedFunction();</script>")
    url = page.resolve().as_uri()
    browser.open(url)
    found = browser.problems(url)
    assert found["console"] == ["broken"]
    assert found["exceptions"] and "undefinedFunction" in found["exceptions"][0]
    assert "http://127.0.0.1:9/x.png" in found["requests"]
    assert (tmp_path / "other.png").as_uri() in found["requests"]
