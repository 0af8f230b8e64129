"""A swept axis never collapses: two configurations that differ only in `norm` (or `padding`)
are two rows in the console table, in report.html and report.md, and two scaling series.
(harness.case is the one definition every one of them reads.)"""
from __future__ import annotations

import json
import re

import pytest

from harness.analysis.summary import latency_table, median_text
from harness.case import axis_text, config_key, shape_key, sweep_len, value_of
from harness.report.format import escape_md
from harness.store import load_records
from tests.test_report import Page, md_table

SWEEPS = {
    "norm": ('level = "encoder"\nimpls = ["torch.encoder", "torch.encoder.naive"]\n'
             'norm = ["post", "pre"]\nheads = 2\nhead_dim = 8\nseq_len = [32, 64, 128]\n',
             "norm", ["post", "pre"]),
    "padding": ('level = "mha"\nimpls = ["torch.mha", "torch.mha.naive"]\n'
                'padding = [0.0, 0.25]\nheads = 2\nhead_dim = 8\nseq_len = [32, 64, 128]\n',
                "padding", ["0", "0.25"]),
}
TIMING = "[timing]\nwarmup_s = 0.01\nmin_samples = 3\nmax_samples = 30\nbudget_s = 0.05\n"


@pytest.fixture(scope="module", params=sorted(SWEEPS))
def swept_run(request, tmp_path_factory):
    from tests.conftest import attnbench

    body, axis, shown = SWEEPS[request.param]
    root = tmp_path_factory.mktemp(f"sweep-{request.param}")
    suite = root / f"{request.param}.toml"
    suite.write_text("[sweep]\n" + body + TIMING)
    out = root / "run"
    result = attnbench("run", suite, "--out", out, "--verbose")  # the full tables too
    assert result.returncode == 0, result.stdout + result.stderr
    return out, result.stdout, axis, shown


def test_each_configuration_is_its_own_row_and_series(swept_run):
    out, console, axis, shown = swept_run
    records = [r for r in load_records(out) if r["status"] == "ok"]
    assert len({config_key(r) for r in records}) == 2
    assert len({shape_key(r) for r in records}) == 6  # 2 configurations x 3 lengths

    header, rows = latency_table(records)
    assert axis in header
    column = header.index(axis)
    for impl in {r["impl"] for r in records}:
        mine = [row for row in rows if row[0] == impl]
        assert sorted(row[column] for row in mine) == shown, rows

    # the console prints that table: the axis is a column, and each impl has a row per value
    table = console[console.index("median latency"):]
    assert re.search(rf"\b{axis}\b", table.splitlines()[2] + table.splitlines()[1]), table
    impl = records[0]["impl"]
    assert sum(1 for line in table.splitlines() if f" {impl} " in f" {line} ") >= 2, table

    # memory: a series whatever the machine's load (a contended time is left out of fits)
    scaling = json.loads((out / "scaling.json").read_text())
    series = [f for f in scaling["fits"] if f["metric"] == "memory" and f["impl"] == impl]
    assert sorted(str(f[axis]) if axis != "padding" else f"{f[axis]:g}" for f in series) == shown


def test_both_reports_name_both_configurations(swept_run):
    """Each configuration is its own row, holding its own figures: report.md's latency table
    has one row per implementation and swept value; report.html's matrix one row per swept
    value and length, and its throughput table one row per implementation and configuration,
    labelled axis=value. A collapsed axis would show one configuration's figure in both."""
    out, _, axis, shown = swept_run
    records = [r for r in load_records(out) if r["status"] == "ok"]
    impls = sorted({r["impl"] for r in records})

    latency = md_table((out / "report.md").read_text(), "Median latency (ms)")
    assert sorted((row["impl"], row[axis]) for row in latency) == [
        (impl, value) for impl in impls for value in shown], latency
    page = Page((out / "report.html").read_text())
    matrix = page.table("matrix-table")
    assert sorted((row[axis]["text"], int(row["N"]["text"])) for row in matrix) == sorted(
        (value, sweep_len(r)) for value in shown for r in records if r["impl"] == impls[0]
        and axis_text(axis, value_of(r, axis)) == value)
    for r in records:
        value, n = axis_text(axis, value_of(r, axis)), sweep_len(r)
        (md_row,) = [row for row in latency if (row["impl"], row[axis]) == (r["impl"], value)]
        assert md_row[f"N={n}"] == escape_md(median_text(r)), (r["case_id"], md_row)
        (html_row,) = [row for row in matrix
                       if (row[axis]["text"], row["N"]["text"]) == (value, str(n))]
        shown_ms = html_row[f"{r['impl']} (ms)"]["text"].split()[0].rstrip("†")
        assert shown_ms == median_text(r), (r["case_id"], html_row)

    throughput = [(row["implementation"]["text"], row["configuration"]["text"])
                  for row in page.table("throughput-table")]
    for impl in impls:
        for value in shown:
            assert sum(who == impl and f"{axis}={value}" in config.split()
                       for who, config in throughput) == 1, throughput
