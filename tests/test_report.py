"""Reports: report.html (self-contained, every section, numbers equal to results.jsonl, plots
inline, nothing fetched) and report.md (the same numbers, short), from the smoke suite's real run
and from hand-made run directories that real runs produce: nothing but unsupported cases, a run
cut off half way, one implementation, one seq_len, failures of every kind.
"""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from harness.report import write_reports
from harness.report.format import escape_md, fmt_err, fmt_ratio, fmt_tflops
from harness.spec import Case, TimingSettings
from harness.store import (RECORD_FIELDS, SCHEMA_VERSION, Plan, load_records, make_record,
                           write_plan)
from harness.units import duration

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("verdict", "what-ran", "summary", "matrix", "scaling", "memory", "throughput",
            "roofline",
            "speedup", "numerics", "problems", "not-run", "method")


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "harness.cli", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def smoke_run_dir(smoke_run) -> Path:
    """The session's smoke run (tests/conftest.py), checked to have finished cleanly."""
    out, result = smoke_run
    assert result.returncode == 0, result.stdout + result.stderr
    return out


@pytest.fixture(scope="module")
def smoke(smoke_run):
    """The smoke run rendered again by `attnbench report RUN_DIR` (both formats)."""
    out = smoke_run_dir(smoke_run)
    result = cli("report", out, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"wrote {out / 'report.html'}" in result.stdout
    assert f"wrote {out / 'report.md'}" in result.stdout
    return out


# ---- a small HTML reader (the standard library's parser) --------------------------------

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


class Page(HTMLParser):
    """Every tag's attributes, each table's header and cells (text and attributes), each
    element's text by id, and the raw text of <style> and <script>."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.tables: dict[str, dict] = {}
        self.ids: dict[str, list[str]] = {}
        self.style = self.script = ""
        self._table = None
        self._cell = None
        self._open: list[tuple[str, str | None]] = []
        self._raw = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "table":
            self._table = {"header": [], "rows": []}
            self.tables[a.get("id", f"table{len(self.tables)}")] = self._table
        elif tag == "tr" and self._table is not None:
            self._table["rows"].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = {"tag": tag, "attrs": a, "text": ""}
        if tag in ("style", "script"):
            self._raw = tag
        if "id" in a:
            self.ids[a["id"]] = []
        if tag not in VOID:
            self._open.append((tag, a.get("id")))

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            cell, self._cell = self._cell, None
            cell["text"] = " ".join(cell["text"].split())
            self._table["rows"][-1].append(cell)
        elif tag == "tr" and self._table is not None and self._table["rows"]:
            last = self._table["rows"][-1]
            if last and all(c["tag"] == "th" for c in last) and not self._table["header"]:
                self._table["header"] = [c["text"].replace("↕", "").strip() for c in last]
                self._table["rows"].pop()
        elif tag == "table":
            self._table = None
        elif tag in ("style", "script"):
            self._raw = None
        if any(t == tag for t, _ in self._open):
            while self._open.pop()[0] != tag:
                pass

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data
        if self._raw == "style":
            self.style += data
        elif self._raw == "script":
            self.script += data
        for _, ident in self._open:
            if ident:
                self.ids[ident].append(data)

    def text(self, ident: str) -> str:
        return " ".join("".join(self.ids[ident]).split())

    def table(self, ident: str) -> list[dict[str, dict]]:
        t = self.tables[ident]
        return [dict(zip(t["header"], row)) for row in t["rows"]]


def page_of(run_dir: Path) -> Page:
    return Page((run_dir / "report.html").read_text())


def md_table(markdown: str, heading: str) -> list[dict[str, str]]:
    """The table under '## heading' of a Markdown report, as dicts (cells unescaped)."""
    section = markdown.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    rows = [[c.strip() for c in re.split(r"(?<!\\)\|", ln.strip())[1:-1]] for ln in lines]
    return [dict(zip(rows[0], r)) for r in rows[2:]]


def mask(r) -> str:
    return "causal" if r["causal"] else "full"


# ---- the smoke run's report ----------------------------------------------------------------

def test_html_is_self_contained_with_every_section_and_plot(smoke):
    html = (smoke / "report.html").read_text()
    page = Page(html)
    for tag, attrs in page.tags:
        for name in ("src", "href", "xlink:href", "action", "data", "poster", "srcset"):
            value = attrs.get(name)
            if value is not None:
                assert value.startswith(("#", "data:")), f"<{tag} {name}={value!r}> leaves the page"
    assert "@import" not in page.style and "url(" not in page.style.replace("url(#", "")
    assert not re.search(r"\b(fetch|XMLHttpRequest|import\s*\()", page.script)
    assert not re.search(r"url\((?!#)", html), "a CSS url() that is not a reference inside the page"
    for ident in SECTIONS:
        assert ident in page.ids, f"section #{ident} is missing"
    assert "could not be rendered" not in html
    # every figure is drawn inline: latency, memory, throughput, speedup heatmap
    for fig in ("fig-latency", "fig-memory", "fig-throughput", "fig-roofline", "fig-speedup"):
        assert fig in page.ids
    assert html.count("<svg") >= 4 and "<?xml" not in html
    figure_ids = re.findall(r'<svg[^>]*>.*?</svg>', html, flags=re.S)
    ids = [i for svg in figure_ids for i in re.findall(r'\bid="([^"]+)"', svg)]
    assert len(ids) == len(set(ids)), "two inline SVGs share an element id"
    # units are always shown
    for unit in ("ms", "MiB", "TFLOP/s"):
        assert unit in html
    assert 'lang="en"' in html and "<title>attnbench: smoke</title>" in html


def test_html_numbers_equal_the_records(smoke):
    records = load_records(smoke)
    page = page_of(smoke)
    ok = [r for r in records if r["status"] == "ok"]
    unsupported = [r for r in records if r["status"] == "unsupported"]
    assert ok and unsupported
    assert page.text("verdict").startswith(
        f"✔ All {len(ok)} computed cases agree with the float64 reference "
        f"({len(unsupported)} not run on this machine).")

    # the matrix: every ok record's median (same digits as the console), the fastest at 1.00×
    matrix = {(row["dtype"]["text"], row["mask"]["text"], row["N"]["text"]): row
              for row in page.table("matrix-table")}
    assert len(matrix) == len({(r["dtype"], r["causal"], r["seq_len"]) for r in ok})
    for r in ok:
        cell = matrix[(r["dtype"], mask(r), str(r["seq_len"]))][f"{r['impl']} (ms)"]
        assert float(cell["attrs"]["data-v"]) == r["median_s"]
        assert cell["text"].startswith(shown(r))
        fastest = min(o["median_s"] for o in ok if (o["dtype"], o["causal"], o["seq_len"])
                      == (r["dtype"], r["causal"], r["seq_len"]))
        assert cell["text"].endswith(fmt_ratio(r["median_s"] / fastest))
        spread = (r["ci_high_s"] - r["ci_low_s"]) / 2 / r["median_s"] * 100
        assert f"±{spread:.1f}%" in cell["text"] or f"±{spread:.0f}%" in cell["text"]
    for row in page.table("matrix-table"):
        assert sum("best" in c["attrs"].get("class", "") for c in row.values()) == 1

    # per implementation: counts by status
    for row in page.table("summary-table"):
        impl = row["implementation"]["text"]
        mine = [r for r in records if r["impl"] == impl]
        assert int(row["cases"]["text"]) == len(mine)
        for status in ("ok", "unsupported", "mismatch", "oom", "timeout", "error"):
            assert int(row[status]["text"]) == sum(r["status"] == status for r in mine)

    # numerics: the worst error per implementation and dtype
    for row in page.table("numerics-table"):
        mine = [r for r in ok if r["impl"] == row["implementation"]["text"]
                and r["dtype"] == row["dtype"]["text"]]
        assert row["max_abs_err"]["text"] == fmt_err(max(r["max_abs_err"] for r in mine))
        assert row["rel_err"]["text"] == fmt_err(max(r["rel_err"] for r in mine))
        assert int(row["cases checked"]["text"]) == len(mine)

    # throughput: TFLOP/s and percent of peak of every ok record
    tput = {(row["implementation"]["text"], row["configuration"]["text"]): row
            for row in page.table("throughput-table")}
    for r in ok:
        text = tput[(r["impl"], f"{r['dtype']} {mask(r)}")][f"N={r['seq_len']}"]["text"]
        assert text.startswith(fmt_tflops(r["tflops"]))
        assert f"{r['pct_of_peak']:.1f}%" in text or f"{r['pct_of_peak']:.2g}%" in text

    # speedup over torch.naive = its median over the implementation's
    base = {(r["dtype"], mask(r), str(r["seq_len"])): r["median_s"] for r in ok
            if r["impl"] == "torch.naive"}
    speed = page.table("speedup-table")
    assert len(speed) == len(base)
    for row in speed:
        key = (row["dtype"]["text"], row["mask"]["text"], row["N"]["text"])
        for r in ok:
            if (r["dtype"], mask(r), str(r["seq_len"])) == key and r["impl"] != "torch.naive":
                assert row[r["impl"]]["text"] == fmt_ratio(base[key] / r["median_s"])

    # what did not run: every unsupported implementation with its reason
    not_run = page.text("not-run-table")
    for r in unsupported:
        assert r["impl"] in not_run and " ".join(r["reason"].split()) in not_run
    # how it was measured: the run's own timing settings (suites/smoke.toml)
    method = page.text("method")
    assert "5 ms (at least 2 calls)" in method and "20 ms of sampling" in method
    assert "memray" in method and "2.5× its forward" in method
    assert "the first of them is the call whose output is checked" in method
    what = page.text("what-ran")
    env = json.loads((smoke / "env.json").read_text())
    assert env["git"]["commit"] in what and env["cpu"] in what and "matmul" in what


def shown(record: dict) -> str:
    """A median as the tables show it: marked ~ when the run called it unstable."""
    return ("~" if record["stable"] is False else "") + duration(record["median_s"], unit="ms")


def test_markdown_has_the_same_numbers_as_the_html(smoke):
    records = load_records(smoke)
    markdown = (smoke / "report.md").read_text()
    page = page_of(smoke)
    ok = [r for r in records if r["status"] == "ok"]
    assert markdown.startswith("# attnbench: smoke\n\n✅ **All 28 computed cases agree")
    assert f"All {len(ok)} computed cases agree" in markdown
    latency = md_table(markdown, "Median latency (ms)")
    matrix = {(row["dtype"]["text"], row["mask"]["text"], row["N"]["text"]): row
              for row in page.table("matrix-table")}
    for r in ok:
        md_row = next(row for row in latency if (row["impl"], row["dtype"], row["mask"])
                      == (r["impl"], r["dtype"], mask(r)))
        md_cell = md_row[f"N={r['seq_len']}"].replace("\\~", "~")  # Markdown escapes the mark
        assert md_cell == shown(r)
        html_cell = matrix[(r["dtype"], mask(r), str(r["seq_len"]))][f"{r['impl']} (ms)"]
        assert html_cell["text"].startswith(md_cell + ("†" if not r["converged"] else "") + " ")
    impls = md_table(markdown, "Implementations")
    html_impls = {row["implementation"]["text"]: row for row in page.table("summary-table")}
    for row in impls:
        impl = row["impl"].strip("`")
        assert row["ok"] == html_impls[impl]["ok"]["text"]
        assert row["fastest in"].replace("-", "–") == html_impls[impl]["fastest in"]["text"]
    assert "## Not run on this machine" in markdown and "`xformers`" in markdown
    assert "## Problems" not in markdown
    # short enough for a pull-request comment
    assert len(markdown) < 20_000 and markdown.count("\n") < 150


def test_report_formats_baseline_and_entry_points(smoke, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("results.jsonl", "env.json", "suite.toml"):
        (run / name).write_bytes((smoke / name).read_bytes())
    result = cli("report", run, "--format", "md")
    assert result.returncode == 0 and (run / "report.md").exists()
    assert not (run / "report.html").exists()
    result = subprocess.run([sys.executable, "report.py", str(run), "--baseline", "numpy"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    page = page_of(run)
    assert page.text("speedup").startswith("Speedup over numpy")
    assert "numpy" not in page.tables["speedup-table"]["header"]
    result = cli("report", run, "--baseline", "no.such.impl", "--format", "html")
    assert result.returncode == 0
    assert "The baseline no.such.impl is not in this run" in page_of(run).text("speedup")
    result = cli("report", run, "--format", "pdf")
    assert result.returncode == 2 and "--format" in result.stderr and "pdf" in result.stderr


def test_run_writes_both_reports_and_prints_their_paths(tmp_path):
    out = tmp_path / "run"
    result = cli("run", "smoke", "--impl", "numpy", "--seq-len", "32", "--out", out)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"report: {out / 'report.html'}" in result.stdout
    assert f"report: {out / 'report.md'}" in result.stdout
    page = page_of(out)
    assert "numpy" in page.text("summary")
    # one implementation, one seq_len: it says so instead of drawing nothing
    assert "only 1 seq_len" in page.text("scaling")
    assert "The baseline torch.naive is not in this run" in page.text("speedup")


# ---- hand-made run directories ----------------------------------------------------------

ENV = {"schema_version": SCHEMA_VERSION, "suite": "hand", "started_at": "2026-01-01T00:00:00+00:00",
       "python": "3.11", "cpu": "Test CPU", "threads": 2, "physical_cores": 2,
       "logical_cores": 2, "packages": {"numpy": "2.0", "torch": None}, "gpus": [],
       "git": {"commit": "abc123", "dirty": False}, "workers": {},
       "peaks": {"cpu": {"matmul_tflops": {"float32": 0.2}, "matmul_n": 1024,
                         "bandwidth_gbs": 40.0}}}


def record(impl, n, status="ok", dtype="float32", causal=False, median=None, **extra):
    r = dict.fromkeys(RECORD_FIELDS)
    r.update(schema_version=SCHEMA_VERSION, impl=impl, level="kernel", mode="fwd",
             device="cpu", dtype=dtype, batch=1, heads=2, seq_len=n, seq_len_kv=n, head_dim=16,
             causal=causal, seed=0, status=status, reason="", threads=2)
    r["case_id"] = (f"{impl}/kernel/fwd/cpu/{dtype}/b1-h2-n{n}x{n}-d16/"
                    f"{'causal' if causal else 'full'}/s0")
    if status == "ok":
        med = median if median is not None else 1e-6 * n * n / 64
        r.update(median_s=med, ci_low_s=med * 0.98, ci_high_s=med * 1.02, ci_rel=0.02,
                 converged=True, iqr_s=med * 0.03, min_s=med * 0.97, mean_s=med, std_s=0.0,
                 n_samples=7, calls_per_sample=1, warmup_calls=2, samples_s=[med] * 7,
                 max_abs_err=2e-7, rel_err=1e-7, tolerance=1e-5, out_dtype=dtype,
                 flops=4 * 16 * n * n * 2, peak_mem_bytes=8 * n * n * 2,
                 mem_method="memray")
        r["tflops"] = r["flops"] / med / 1e12
        r["pct_of_peak"] = 100 * r["tflops"] / 0.2
    r.update(extra)
    return r


def make_run(path: Path, records, env=ENV, tail: str = "") -> Path:
    path.mkdir(parents=True)
    (path / "env.json").write_text(json.dumps(env))
    (path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + tail)
    return path


def render(path: Path) -> tuple[Page, str, str]:
    paths = write_reports(path)
    assert paths == [path / "report.html", path / "report.md"]
    html = (path / "report.html").read_text()
    assert "could not be rendered" not in html, html[html.find("could not be rendered"):][:600]
    return Page(html), html, (path / "report.md").read_text()


def test_a_run_with_only_unsupported_cases(tmp_path):
    reason = "xformers says: device=cpu (supported: {'cuda'})"
    run = make_run(tmp_path / "r", [record("xformers", n, "unsupported", reason=reason)
                                     for n in (32, 64)])
    page, html, md = render(run)
    assert page.text("verdict").startswith("! Nothing ran: all 2 recorded cases are unsupported")
    assert "No implementation ran any case: all 2 cases are unsupported here" in page.text("matrix")
    assert "No timed case, so there is no latency to plot." in page.text("scaling")
    assert "No peak memory was measured in this run (no case ran)" in page.text("memory")
    assert "The baseline torch.naive is not in this run" in page.text("speedup")
    assert "No output was checked against the reference" in page.text("numerics")
    assert reason in page.text("not-run") and "<svg" not in html
    assert "Nothing ran" in md and f"`xformers` (2 cases): {reason}" in md
    assert "_No case was timed" in md


def test_a_run_cut_off_half_way(tmp_path):
    records = [record(i, n) for i in ("numpy", "torch.naive") for n in (32, 64)]
    half = json.dumps(record("torch.sdpa", 32))[:57]
    run = make_run(tmp_path / "r", records, tail=half)
    page, html, md = render(run)
    verdict = page.text("verdict")
    assert "All 4 computed cases agree" in verdict
    assert "no scaling.json" in verdict and "probably interrupted" in verdict
    assert "cut off mid-write" in verdict
    assert len(page.table("matrix-table")) == 2 and "<svg" in html
    assert "probably interrupted" in md and "cut off" in md

    # an older run directory without plan.json: the timing comes from its suite.toml
    (run / "suite.toml").write_text((ROOT / "suites" / "smoke.toml").read_text())
    page, html, md = render(run)
    assert "Settings from suite.toml in the run directory" in page.text("method")
    assert "5 ms (at least 2 calls)" in page.text("method")


def test_a_run_with_one_implementation_and_one_seq_len(tmp_path):
    run = make_run(tmp_path / "r", [record("numpy", 64), record("numpy", 64, causal=True)])
    page, html, md = render(run)
    assert [row["fastest in"]["text"] for row in page.table("summary-table")] == ["–"]
    assert "only 1 seq_len with a value" in page.text("scaling")
    assert "The baseline torch.naive is not in this run" in page.text("speedup")
    assert "--baseline IMPL" in page.text("speedup") and "numpy" in page.text("speedup")
    assert html.count("<svg") == 4  # latency, memory, throughput, roofline; no speedup heatmap
    assert "the only implementation that ran it" in md
    # the baseline is the only implementation: nothing to compare it with, and it says so
    write_reports(run, baseline="numpy")
    assert "No other implementation ran a shape that numpy ran." in page_of(run).text("speedup")


def test_a_run_with_failures_of_every_kind(tmp_path):
    records = [record("numpy", n) for n in (32, 64, 128)]
    records += [record("torch.naive", 32),
                record("torch.naive", 64, "mismatch", max_abs_err=0.5, rel_err=0.2,
                       tolerance=1e-5, median_s=None, reason="max_abs_err 0.5 > tolerance 1e-05"),
                record("torch.naive", 128, "oom", reason="out of memory", oom_bytes=2**31),
                record("torch.sdpa", 32, "error",
                       reason="RuntimeError: boom | with a pipe <script>alert(1)</script>"),
                record("torch.sdpa", 64, "timeout", reason="no record within 300 s"),
                record("torch.sdpa.math", 32, "mismatch", max_abs_err=math.nan,
                       tolerance=1e-5, reason="the output holds NaN")]
    run = make_run(tmp_path / "r", records)
    page, html, md = render(run)
    assert page.text("verdict").startswith(
        "✖ 5 of 9 cases failed: 2 mismatches, 1 out of memory, 1 timeout, 1 error.")
    problems = page.table("problems-table")
    assert [p["status"]["text"] for p in problems] == ["mismatch", "mismatch", "oom", "timeout",
                                                      "error"]
    problems = problems[:1] + problems[2:]
    assert "asked for 2048 MiB" in problems[1]["reason"]["text"]
    matrix = {row["N"]["text"]: row for row in page.table("matrix-table")}
    assert matrix["64"]["torch.naive (ms)"]["text"] == "MISMATCH"
    assert matrix["128"]["torch.naive (ms)"]["text"] == "OOM"
    numerics = {row["implementation"]["text"]: row for row in page.table("numerics-table")}
    assert numerics["torch.naive"]["mismatches"]["text"] == "1"
    assert numerics["torch.naive"]["max_abs_err"]["text"] == fmt_err(0.5)
    assert numerics["torch.sdpa.math"]["max_abs_err"]["text"] == "NaN/Inf"
    assert numerics["torch.sdpa.math"]["mismatches"]["text"] == "1"
    assert md.startswith("# attnbench: hand\n\n❌ **5 of 9 cases failed")
    problems_md = md_table(md, "Problems")
    assert [p["status"] for p in problems_md] == ["mismatch", "mismatch", "oom", "timeout",
                                                  "error"]
    assert "RuntimeError: boom \\| with a pipe" in md
    # autoescaped: a reason is shown as text, never run as markup
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "alert(1)" not in page.script
    assert "<script>alert(1)</script>" in problems[3]["reason"]["text"]


def test_an_empty_run_and_odd_records(tmp_path):
    page, html, md = render(make_run(tmp_path / "empty", []))
    assert page.text("verdict").startswith("! No case was recorded in this run.")
    assert "No case was recorded" in md
    # an older record without some fields, NaN where a number was expected, no env.json
    odd = record("numpy", 32)
    for key in ("ci_low_s", "ci_high_s", "pct_of_peak", "peak_mem_bytes", "seed"):
        del odd[key]
    odd["max_abs_err"] = math.nan
    run = make_run(tmp_path / "odd", [odd, record("numpy", 64, "ok", tflops=math.inf)])
    (run / "env.json").unlink()
    page, html, md = render(run)
    assert "All 2 computed cases agree" in page.text("verdict")
    assert "not measured in this run" in page.text("what-ran")


# ---- the plan: what a run set out to record ------------------------------------------------

def hand_cases(impls=("numpy", "torch.naive"), seq_lens=(32, 64)) -> list[Case]:
    return [Case(impl=i, batch=1, heads=2, seq_len=n, head_dim=16, causal=c)
            for i in impls for n in seq_lens for c in (False, True)]


def hand_plan(cases, timing=TimingSettings(), **extra) -> Plan:
    return Plan(suite="hand", suite_path=None, filters={}, overrides={}, timing=timing,
                cases=tuple(cases), created_at="2026-01-01T00:00:00+00:00",
                extra={"suite_arg": "hand", **extra})


def case_record(case: Case, status="ok", **extra) -> dict:
    """A record of `case` as a run writes it (`make_record`), measured like `record`'s."""
    fixed = {*case.to_dict(), "case_id", "schema_version"}
    measured = record(case.impl, case.seq_len, status, dtype=case.dtype, causal=case.causal,
                      **extra)
    return make_record(case, {k: v for k, v in measured.items() if k not in fixed})


def planned_run(path: Path, plan: Plan, records) -> Path:
    run = make_run(path, records)
    write_plan(run, plan)
    return run


def test_a_complete_run_says_it_is_complete(tmp_path):
    from harness.report import tables
    from harness.report.run import load_run

    cases = hand_cases()
    timing = TimingSettings(warmup_s=0.003, budget_s=0.7, target_ci=0.05)
    run = planned_run(tmp_path / "r", hand_plan(cases, timing), [case_record(c) for c in cases])
    loaded = load_run(run)
    assert loaded.expected == len(cases) == 8 and loaded.missing == [] and loaded.complete
    verdict = tables.verdict(loaded)
    assert verdict["level"] == "ok" and verdict["notes"] == []
    assert verdict["coverage"] == "complete: all 8 planned cases recorded"
    page, html, md = render(run)
    assert page.text("verdict").startswith("✔ All 8 computed cases agree")
    assert "complete: all 8 planned cases recorded" in page.text("verdict")
    assert "- cases: complete: all 8 planned cases recorded" in md
    for text in (html, md):
        assert "Incomplete" not in text and "probably interrupted" not in text
    # the timing settings are the plan's
    method = page.text("method")
    assert "Settings from plan.json" in method
    assert "3 ms (at least 2 calls)" in method and "700 ms of sampling" in method
    assert "within ±5% of the median" in method


def test_an_interrupted_run_names_the_cases_it_is_missing(tmp_path):
    from harness.report import tables
    from harness.report.run import load_run

    cases = hand_cases(seq_lens=(32, 64, 128, 256))[:14]
    done = [cases[0], cases[5], cases[9]]
    run = planned_run(tmp_path / "r", hand_plan(cases), [case_record(c) for c in done])
    missing = [c.case_id for c in cases if c not in done]
    assert len(missing) == 11
    loaded = load_run(run)
    assert loaded.expected == 14 and loaded.missing == missing and not loaded.complete

    verdict = tables.verdict(loaded)
    assert verdict["level"] == "ok"  # what ran agrees; the note says what did not run
    (note,) = [n for n in verdict["notes"] if n.startswith("Incomplete run")]
    assert note.startswith("Incomplete run: 3 of 14 cases recorded, 11 missing (interrupted, "
                           "or still running).")
    for case_id in missing[:10]:
        assert f"`{case_id}`" in note
    assert missing[10] not in note and "and 1 more." in note
    assert f"`attnbench run hand --out {run} --resume`" in note
    assert "probably interrupted" not in " ".join(verdict["notes"])

    page, html, md = render(run)
    assert note in page.text("verdict") and f"> {note}" in md
    assert "incomplete: 3 of 14 planned cases recorded" in page.text("verdict")
    assert all(case_id in md for case_id in missing[:10])

    # a few missing: every one named, no "more"
    run2 = planned_run(tmp_path / "r2", hand_plan(cases[:4]),
                       [case_record(c) for c in cases[:2]])
    (note,) = [n for n in tables.verdict(load_run(run2))["notes"]
               if n.startswith("Incomplete run")]
    assert note.startswith("Incomplete run: 2 of 4 cases recorded, 2 missing")
    assert f"Missing: `{cases[2].case_id}`, `{cases[3].case_id}`." in note and "more" not in note


def test_a_record_outside_the_plan_does_not_count_as_planned(tmp_path):
    from harness.report import tables
    from harness.report.run import load_run

    cases = hand_cases()
    extra = Case(impl="numpy", batch=1, heads=2, seq_len=512, head_dim=16)
    run = planned_run(tmp_path / "r", hand_plan(cases[1:]),
                      [case_record(c) for c in cases[1:]] + [case_record(extra)])
    loaded = load_run(run)
    assert loaded.complete and loaded.expected == 7
    assert not any(n.startswith("Incomplete") for n in tables.verdict(loaded)["notes"])


def test_a_damaged_plan_is_a_note_not_a_traceback(tmp_path):
    from harness.report import tables
    from harness.report.run import load_run

    run = make_run(tmp_path / "r", [record("numpy", 32), record("numpy", 64)])
    (run / "plan.json").write_text('{"suite": "hand", "cases": [')
    loaded = load_run(run)
    assert loaded.plan is None and loaded.expected is None and "plan.json" in loaded.plan_error
    notes = tables.verdict(loaded)["notes"]
    assert any(n.startswith("plan.json could not be read") for n in notes)
    page, html, md = render(run)
    assert "plan.json could not be read" in page.text("verdict")
    assert "plan.json could not be read" in md
    assert "Traceback" not in html and "Settings from the harness defaults" in page.text("method")


def test_the_method_text_follows_the_constants_the_code_uses(tmp_path, monkeypatch):
    from harness.analysis import scaling
    from harness.measure import flops, memory, timer
    from harness.problem import reference
    from harness.report.method import method
    from harness.report.run import load_run

    cases = hand_cases(impls=("numpy",))
    timing = TimingSettings(warmup_s=0.004, min_sample_s=2e-4, max_samples=321, min_samples=9,
                            budget_s=1.5, timeout_s=45.0, target_ci=0.03)
    run = load_run(planned_run(tmp_path / "r", hand_plan(cases, timing),
                               [case_record(c) for c in cases]))
    before = dict(method(run))
    assert "for 4 ms (at least 2 calls)" in before["warm-up"]
    assert "first of them is the call whose output is checked" in before["warm-up"]
    assert ("calls shorter than 200 µs" in before["sampling"]
            and "95% confidence interval" in before["sampling"]
            and "within ±3% of the median, or 1.5 s of sampling" in before["sampling"]
            and "321 samples" in before["sampling"] and "fewer than 9" in before["sampling"]
            and "killed after 45 s" in before["sampling"])
    assert "max(floor, 4 × the error" in before["tolerance"]
    assert "float32 1e-05" in before["tolerance"]
    assert "2.5× its forward" in before["FLOPs"] and "mha and encoder" not in before["FLOPs"]
    assert "largest 4 seq_lens" in before["scaling"] and "within 10%" in before["scaling"]
    assert memory.METHODS["memray"] in before["memory"]

    monkeypatch.setattr(timer, "MIN_WARMUP_CALLS", 3)
    monkeypatch.setattr(timer, "CONFIDENCE", 0.99)
    monkeypatch.setattr(reference, "TOLERANCE_FACTOR", 7.5)
    monkeypatch.setattr(reference, "ABS_FLOOR", {"float32": 3e-6})
    monkeypatch.setattr(flops, "BACKWARD_FACTOR", 3.0)
    monkeypatch.setattr(scaling, "FIT_POINTS", 5)
    monkeypatch.setattr(scaling, "CROSSOVER_MARGIN", 1.25)
    monkeypatch.setitem(memory.METHODS, "memray", "a probe described differently")
    after = dict(method(run))
    assert "at least 3 calls" in after["warm-up"] and "at least 2 calls" not in after["warm-up"]
    assert "99% confidence interval" in after["sampling"] and "95%" not in after["sampling"]
    assert "99% CI" in after["statistics"] and "95%" not in after["statistics"]
    assert "max(floor, 7.5 × the error" in after["tolerance"]
    assert "float32 3e-06" in after["tolerance"] and "1e-05" not in after["tolerance"]
    assert "3× its forward" in after["FLOPs"]
    assert "largest 5 seq_lens" in after["scaling"] and "within 25%" in after["scaling"]
    assert "a probe described differently" in after["memory"]

    # a layer's matrix products are counted with their own backward factor
    layer = Case(impl="torch.mha", level="mha", mode="fwd_bwd", batch=1, heads=2, seq_len=32,
                 head_dim=16)
    run.records.append(case_record(layer))
    monkeypatch.setattr(flops, "MATMUL_BACKWARD_FACTOR", 2.25)
    assert "whose backward is 2.25× forward" in dict(method(run))["FLOPs"]


def test_outside_text_prints_as_plain_text_in_markdown():
    from harness.report.format import code_md, escape_md

    assert escape_md("max_abs_err 0.5 > tolerance 1e-05") == "max_abs_err 0.5 &gt; tolerance 1e-05"
    assert escape_md("a | b\nc *d* _e_ [f](g) `h` <i> $j$ ~k~ &l;") == (
        "a \\| b c \\*d\\* \\_e\\_ \\[f\\](g) \\`h\\` &lt;i&gt; \\$j\\$ \\~k\\~ &amp;l;")
    assert escape_md("# not a heading") == "\\# not a heading"
    assert escape_md("1. not a list") == "1\\. not a list" and escape_md("1.5 ms") == "1.5 ms"
    assert escape_md("- not a list") == "\\- not a list" and escape_md("-") == "-"
    assert code_md("a|b") == "`a\\|b`" and code_md("x`y") == "`` x`y ``"


def test_the_report_of_a_complete_smoke_run_says_it_is_complete(smoke):
    planned = json.loads((smoke / "plan.json").read_text())["case_ids"]
    recorded = {json.loads(line)["case_id"] for line in (smoke / "results.jsonl").open()}
    assert sorted(planned) == sorted(recorded) and len(planned) > 0  # a re-measured case: 2 lines
    markdown = (smoke / "report.md").read_text()
    assert f"complete: all {len(planned)} planned cases recorded" in markdown
    assert "Incomplete" not in markdown
    assert f"all {len(planned)} planned cases recorded" in (smoke / "report.html").read_text()


def test_a_decode_run_shows_bandwidth_and_names_its_alignment_and_kv_heads(tmp_path):
    """Memory-bound cases get GB/s and % of bandwidth beside the latency, in both reports and
    the console's table; every configuration names its K/V heads and its alignment."""
    from harness.analysis.summary import bandwidth_table

    def decode(impl, nk, gbps):
        r = record(impl, 1, causal=True, median=1e-4, pct_of_peak=1.0, gbps=gbps,
                   pct_of_bandwidth=100 * gbps / 40.0, bytes_moved=int(gbps * 1e5), kv_heads=1,
                   causal_align="bottom_right", seq_len_kv=nk)
        r["case_id"] = f"{impl}/kernel/fwd/cpu/float32/b1-h2-n1x{nk}-d16/causal/s0/kvh1/br"
        return r

    records = [decode(i, nk, g) for i, g0 in (("numpy", 10.0), ("torch.sdpa", 30.0))
               for nk, g in ((1024, g0), (4096, g0 * 1.1))]
    records.append(record("numpy", 64))  # a compute-bound prefill case: no bandwidth row
    header, rows = bandwidth_table(records)
    assert header[-2:] == ["N=1024", "N=4096"] and len(rows) == 2
    assert "kv_heads" in header and "causal_align" in header and "N q" in header
    assert rows[1][0] == "torch.sdpa" and rows[1][-1] == "33 (82%)"
    run = make_run(tmp_path / "r", records)
    page, html, md = render(run)
    assert "## Bandwidth of the memory-bound cases (GB/s)" in md and "| 33 (82%) |" in md
    assert "33 (82%)" in page.text("bandwidth") and "bottom_right" in page.text("bandwidth")
    assert "bottom_right" in page.text("matrix") and "kv_heads" in html


def test_speedups_name_their_extremes_and_padding_shows_its_cost(tmp_path):
    """attention-gym's summary (average, best, worst, each named) and padded vs packed."""
    from harness.report.speedups import padding_overhead, speedup_summary

    def ragged(impl, n, layout, median):
        r = record(impl, n, causal=True, median=median, lengths="uniform", layout=layout)
        r["case_id"] += f"/len-uniform{'/packed' if layout == 'packed' else ''}"
        return r

    records = [record("torch.naive", n, median=1e-3 * n / 64) for n in (64, 128, 256)]
    records += [record("numpy", n, median=1e-3 * n / 64 / s) for n, s in ((64, 2.0), (128, 4.0),
                                                                          (256, 1.0))]
    (row,) = speedup_summary(records, "torch.naive")
    assert row["impl"] == "numpy" and row["shapes"] == 3
    assert row["average"] == pytest.approx(2.0) and row["best"] == pytest.approx(4.0)
    assert row["best_where"].endswith("N=128") and row["worst_where"].endswith("N=256")

    records += [ragged("torch.sdpa", 256, "padded", 3e-3), ragged("torch.sdpa", 256, "packed", 1e-3),
                ragged("numpy", 256, "padded", 8e-3), ragged("torch.flex", 256, "packed", 2e-3)]
    rows = {r["impl"]: r for r in padding_overhead(records)}
    assert rows["torch.sdpa"]["overhead"] == pytest.approx(3.0) and rows["torch.sdpa"]["same_impl"]
    assert rows["numpy"]["packed_impl"] == "torch.sdpa" and rows["numpy"]["overhead"] == 8.0
    assert "lengths=uniform" in rows["numpy"]["config"] and "packed" not in rows["numpy"]["config"]
    page, html, md = render(make_run(tmp_path / "r", records))
    assert "3.00×" in page.text("padding") and "## What padding costs" in md
    assert "N=128" in page.text("speedup") and "## Speedup over `torch.naive`" in md


def test_a_ragged_case_shows_useful_tflops_beside_raw():
    from harness.measure.flops import case_flops, padded_flops
    from harness.report.tables import throughput

    r = record("torch.sdpa", 256, causal=True, median=1e-3, lengths="uniform", batch=4)
    case = Case.from_dict(r)
    r.update(flops=case_flops(case), tflops=case_flops(case) / 1e-3 / 1e12)
    assert case_flops(case) < padded_flops(case)  # real tokens only: half the padded batch
    (row,) = throughput([r], ENV)["rows"]
    cell = row["cells"][256]
    assert cell["text"] == fmt_tflops(r["tflops"])
    assert cell["raw_text"] == fmt_tflops(padded_flops(case) / 1e-3 / 1e12)
    plain = record("torch.sdpa", 256)
    assert throughput([plain], ENV)["rows"][0]["cells"][256]["raw_text"] == ""


def test_a_dispatcher_that_fell_back_to_math_is_pointed_out_in_every_output(tmp_path, capsys):
    """torch.sdpa ran SDPA's math backend for its grouped-K/V cases: the console and both
    reports name it and the count; torch.sdpa.math, which asks for math, is no fallback."""
    from harness.cli.display import RunDisplay
    from harness.report.finish import Finished

    def grouped(impl, n, kernel, kv_heads=1):
        r = record(impl, n, kernel=kernel, kv_heads=kv_heads)
        r["case_id"] += f"/kvh{kv_heads}" if kv_heads != 2 else ""
        return r

    said = ("torch.sdpa ran the math backend for 3 cases, 2 of them grouped-K/V "
            "(kv_heads < heads): the fused kernels did not take them")
    fell_back = [grouped("torch.sdpa", n, "math") for n in (32, 64)]
    fell_back.append(grouped("torch.sdpa", 32, "math", kv_heads=2))
    fused = [grouped("torch.sdpa", 128, "flash_attention"),
             *(grouped("torch.sdpa.math", n, "math") for n in (32, 64))]
    page, _, md = render(make_run(tmp_path / "fell", fell_back + fused))
    assert said in page.text("math-fallback") and "torch.sdpa.math" not in page.text(
        "math-fallback")
    assert "## The SDPA dispatcher fell back to math" in md and f"- {escape_md(said)}" in md
    RunDisplay(5).summary(Finished(fell_back + fused, reports=[]), "/tmp/run")
    assert f"math fallback: {said}" in " ".join(capsys.readouterr().out.split())

    page, _, md = render(make_run(tmp_path / "fused", fused))
    assert "math-fallback" not in page.ids and "math backend" not in md
    RunDisplay(3).summary(Finished(fused, reports=[]), "/tmp/run")
    assert "math fallback" not in capsys.readouterr().out
