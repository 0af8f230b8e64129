"""A run's results in the formats benchmark trackers read, so a team can follow attention
latency over commits with the tool it already uses. One row or entry per ok case that has a
median; each carries the case, the median and its 95% interval, TFLOP/s, GB/s (where the
record has it), peak memory, the kernel that ran, whether the figure is stable (`stable`
false: measured under contention; a tracker's alert on it is noise) and the command that
re-runs the case.

- `csv`: one row per case, columns `EXPORT_COLUMNS` (seconds, bytes, TFLOP/s, GB/s as
  recorded; an empty cell for a figure the record lacks). `pandas.read_csv` reads it back with
  the values `harness.store.load_dataframe` gives.
- `github-action-benchmark`: the `customSmallerIsBetter` input of
  https://github.com/benchmark-action/github-action-benchmark (README, "customBiggerIsBetter
  and customSmallerIsBetter"; parsed by `BenchmarkResult` in its src/extract.ts): a JSON list
  of {"name", "unit", "value", "range"?, "extra"?}, range and extra being text. The value is
  the median in ns, the range half the interval's width, the extra the other figures.
- `bencher`: the Bencher Metric Format (https://bencher.dev/docs/reference/bencher-metric-format):
  {benchmark name: {measure slug: {"value", "lower_value"?, "upper_value"?}}}, every value a
  number. The built-in `latency` measure is in nanoseconds
  (https://bencher.dev/docs/how-to/track-custom-benchmarks), so the median and its interval
  are given in ns; `tflops`, `gbps` and `peak-memory` (bytes) are measures Bencher creates on
  first use. Bencher takes only numbers: the case's fields are in its name, the case id.

The command that re-runs a case narrows the run's suite with the filters `attnbench run` has
(implementation, seq_len, dtype, device, mask, mode) and repeats the settings the run's
command line changed (threads, budget, ...): a case of the suite that differs only in another
axis (batch, heads, a modifier) is measured with it.
"""
from __future__ import annotations

import csv
import io
import json
import shlex
from pathlib import Path

from harness.report.format import finite, fmt_mib, fmt_tflops
from harness.report.run import Run, load_run
from harness.spec import function_path
from harness.store.schema import CASE_FIELDS
from harness.units import duration, significant
from harness.values import BadValue

FORMATS = ("csv", "github-action-benchmark", "bencher")
FIGURES = ("median_s", "ci_low_s", "ci_high_s", "tflops", "gbps", "peak_mem_bytes")
EXPORT_COLUMNS = ("case_id", *CASE_FIELDS, *FIGURES, "kernel", "stable", "command")
NS = 1e9  # nanoseconds per second: Bencher's latency unit, and the unit of our entries
# plan overrides -> the `attnbench run` option that sets them
OVERRIDE_OPTIONS = (("threads", "--threads"), ("budget_s", "--budget"),
                    ("timeout_s", "--timeout"), ("target_ci", "--target-ci"),
                    ("repeats", "--repeats"), ("mem_limit_bytes", "--mem-limit"))


def export_run(run_dir: str | Path, fmt: str) -> str:
    """The run's ok cases as text in `fmt` (one of FORMATS); BadValue for another format."""
    if fmt not in FORMATS:
        raise BadValue(f"--format: unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")
    rows = export_rows(load_run(run_dir))
    if fmt == "csv":
        return to_csv(rows)
    entries = to_github_action_benchmark(rows) if fmt == "github-action-benchmark" \
        else to_bencher(rows)
    return json.dumps(entries, indent=2, allow_nan=False) + "\n"


def export_rows(run: Run) -> list[dict]:
    """One dict per ok case with a finite median, keyed by EXPORT_COLUMNS; a figure that is
    not a finite number is None."""
    rows = []
    for record in run.records:
        if record["status"] != "ok" or finite(record["median_s"]) is None:
            continue
        row = {key: record.get(key) for key in ("case_id", *CASE_FIELDS, "kernel", "stable")}
        row.update({key: _figure(record.get(key)) for key in FIGURES})
        row["command"] = rerun_command(run, record)
        rows.append({key: row[key] for key in EXPORT_COLUMNS})
    return rows


def _figure(value):
    """A finite number as recorded (an int stays an int), else None."""
    return value if finite(value) is not None else None


def rerun_command(run: Run, record: dict) -> str | None:
    """`attnbench run SUITE` narrowed to this case's filters, with the settings the run's
    command line changed; None when the run does not say which suite it ran."""
    plan = run.plan
    suite = (plan.extra.get("suite_arg") or plan.suite_path or plan.suite) if plan \
        else run.env.get("suite")
    if not suite:
        return None
    words = ["attnbench", "run", suite]
    for option, key in (("--impl", "impl"), ("--seq-len", "seq_len"), ("--dtype", "dtype"),
                        ("--device", "device"), ("--mode", "mode")):
        if record.get(key) is not None:
            words += [option, str(record[key])]
    if isinstance(record.get("causal"), bool):
        words += ["--causal", str(record["causal"]).lower()]
    if function_path(str(record.get("impl", ""))):  # a function: its worker loads it
        words += ["--fn", function_path(record["impl"])]
    overrides = plan.overrides if plan else {}
    for key, option in OVERRIDE_OPTIONS:
        if overrides.get(key) is not None:
            words += [option, str(overrides[key])]
    if overrides.get("cuda_graphs"):
        words.append("--cuda-graphs")
    return shlex.join(words)


def to_csv(rows: list[dict]) -> str:
    """EXPORT_COLUMNS as a header, then one line per row; None as an empty cell."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def to_github_action_benchmark(rows: list[dict]) -> list[dict]:
    """customSmallerIsBetter entries: the median in ns, ± half the interval, the rest as text."""
    entries = []
    for row in rows:
        entry = {"name": row["case_id"], "unit": "ns", "value": row["median_s"] * NS}
        low, high = row["ci_low_s"], row["ci_high_s"]
        if low is not None and high is not None:
            entry["range"] = f"± {significant((high - low) / 2 * NS)}"
        entry["extra"] = "\n".join(_extra_lines(row))
        entries.append(entry)
    return entries


def _extra_lines(row: dict) -> list[str]:
    lines = []
    if row["ci_low_s"] is not None and row["ci_high_s"] is not None:
        lines.append(f"95% CI: {duration(row['ci_low_s'])} – {duration(row['ci_high_s'])}")
    for label, text in (("TFLOP/s", fmt_tflops(row["tflops"])),
                        ("GB/s", "" if row["gbps"] is None else significant(row["gbps"])),
                        ("peak memory", fmt_mib(row["peak_mem_bytes"]) and
                         f"{fmt_mib(row['peak_mem_bytes'])} MiB"),
                        ("kernel", row["kernel"] or ""),
                        ("unstable", "measured under contention" * (row["stable"] is False)),
                        ("rerun", row["command"] or "")):
        if text:
            lines.append(f"{label}: {text}")
    return lines


def to_bencher(rows: list[dict]) -> dict:
    """BMF: per case id, `latency` in ns (with its interval when it brackets the median),
    and `tflops`, `gbps`, `peak-memory` where the record has them."""
    metrics = {}
    for row in rows:
        latency = {"value": row["median_s"] * NS}
        low, high = row["ci_low_s"], row["ci_high_s"]
        if low is not None and high is not None and low <= row["median_s"] <= high:
            latency.update(lower_value=low * NS, upper_value=high * NS)
        measures = {"latency": latency}
        for slug, key in (("tflops", "tflops"), ("gbps", "gbps"),
                          ("peak-memory", "peak_mem_bytes")):
            if row[key] is not None:
                measures[slug] = {"value": float(row[key])}
        metrics[row["case_id"]] = measures
    return metrics
