"""A swept axis never collapses: two configurations that differ only in `norm` (or `padding`)
are two rows in the console table, in report.html and report.md, and two scaling series.
(harness.case is the one definition every one of them reads.)"""
from __future__ import annotations

import json
import re

import pytest

from harness.analysis.summary import latency_table
from harness.case import config_key, shape_key
from harness.store import load_records

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
    out, _, axis, shown = swept_run
    markdown = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    for value in shown:
        label = f"{axis}={value}"
        assert label in markdown or re.search(rf"\|\s*{re.escape(value)}\s*\|", markdown), value
        assert label in html or re.search(rf"<td[^>]*>{re.escape(value)}</td>", html), value
