"""`attnbench export`: a run's ok cases as CSV, github-action-benchmark's customSmallerIsBetter
JSON and Bencher's BMF JSON, held to the documented examples in tests/data/; and results.jsonl
as strict JSON whose nulls the pandas loader reads back as NaN."""
from __future__ import annotations

import io
import json
import math
import shlex
from pathlib import Path

import pandas as pd
import pytest

from harness.cli import build_parser, main
from harness.cli.args import filter_text
from harness.cli.export import FORMAT_NAMES
from harness.report.export import EXPORT_COLUMNS, FORMATS, export_run
from harness.spec import Case, TimingSettings
from harness.store import Plan, RunDir, load_dataframe, load_records, make_record
from harness.store.plan import filter_cases, parse_filters

DATA = Path(__file__).parent / "data"
OK_CASES = [Case(impl=impl, seq_len=n, causal=causal)
            for impl in ("numpy", "torch.sdpa") for n in (32, 64) for causal in (False, True)]


def measured(case: Case, **extra) -> dict:
    median = 1e-6 * case.seq_len
    result = {"status": "ok", "reason": "", "median_s": median, "ci_low_s": median * 0.98,
              "ci_high_s": median * 1.03, "tflops": 0.25, "peak_mem_bytes": 4096 * case.seq_len,
              "samples_s": [median] * 3, "max_abs_err": 1e-7, "rel_err": 1e-8}
    if case.impl == "torch.sdpa":
        result.update(kernel="math", gbps=12.5, stable=case.seq_len == 32)
    return make_record(case, {**result, **extra})


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A run of 8 ok cases, a mismatch whose output held NaN and an unsupported case."""
    mismatch = Case(impl="torch.naive", seq_len=32)
    unsupported = Case(impl="jax.sdpa", seq_len=32)
    plan = Plan(suite="tiny", suite_path=None, filters={},
                overrides={"threads": 2, "budget_s": 0.5}, timing=TimingSettings(),
                cases=(*OK_CASES, mismatch, unsupported), extra={"suite_arg": "suites/tiny.toml"})
    run = RunDir(tmp_path / "run")
    run.start(plan, env={"suite": "tiny"})
    run.open_for_append()
    for case in OK_CASES:
        run.append(measured(case))
    run.append(make_record(mismatch, {"status": "mismatch", "reason": "output contains NaN or "
                                      "Inf", "max_abs_err": math.nan, "rel_err": math.inf,
                                      "samples_s": [1e-3, math.nan], "median_s": -math.inf}))
    run.append(make_record(unsupported, {"status": "unsupported", "reason": "not installed"}))
    run.close()
    return run.path


# ---- results.jsonl: strict JSON, NaN back in pandas ------------------------------------------

def refuse(token):
    raise ValueError(f"non-standard JSON token {token}")


def test_results_are_strict_json_and_non_finite_numbers_come_back_as_nan(run_dir):
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    assert len(lines) == 10
    records = [json.loads(line, parse_constant=refuse) for line in lines]
    bad = records[8]
    assert bad["max_abs_err"] is None and bad["rel_err"] is None and bad["median_s"] is None
    assert bad["samples_s"] == [1e-3, None]
    frame = load_dataframe(run_dir).set_index("impl", drop=False)
    naive = frame.loc["torch.naive"]
    assert math.isnan(naive["max_abs_err"]) and math.isnan(naive["rel_err"])
    assert math.isnan(naive["median_s"])
    assert naive["samples_s"][0] == 1e-3 and math.isnan(naive["samples_s"][1])
    assert frame["max_abs_err"].dtype == "float64" and frame["gbps"].dtype == "float64"
    assert load_records(run_dir)[0]["median_s"] == OK_CASES[0].seq_len * 1e-6  # finite: as is


# ---- CSV -------------------------------------------------------------------------------------

def test_csv_has_one_row_per_ok_case_and_round_trips_through_pandas(run_dir):
    text = export_run(run_dir, "csv")
    exported = pd.read_csv(io.StringIO(text))
    assert list(exported.columns) == list(EXPORT_COLUMNS)
    frame = load_dataframe(run_dir)
    ok = frame[frame["status"] == "ok"].reset_index(drop=True)
    assert len(exported) == len(OK_CASES) == len(ok)
    shared = [c for c in EXPORT_COLUMNS if c != "command"]
    pd.testing.assert_frame_equal(missing_as_none(exported[shared]),
                                  missing_as_none(ok[shared]), check_dtype=False)
    assert exported["median_s"].tolist() == [c.seq_len * 1e-6 for c in OK_CASES]  # every digit
    assert exported["gbps"].isna().sum() == 4 and set(exported["kernel"].dropna()) == {"math"}


def missing_as_none(frame: pd.DataFrame) -> pd.DataFrame:
    """Every missing cell as None: an empty CSV cell reads as NaN, a null record field loads
    as None in a column of objects (stable: true, false or null)."""
    return frame.astype(object).where(frame.notna(), None)


def test_each_case_carries_a_command_that_reruns_it(run_dir):
    exported = pd.read_csv(io.StringIO(export_run(run_dir, "csv")))
    for case, command in zip(OK_CASES, exported["command"]):
        words = shlex.split(command)
        assert words[:3] == ["attnbench", "run", "suites/tiny.toml"]
        args = build_parser().parse_args(words[1:])
        assert (args.threads, args.budget) == (2, 0.5)  # what the run's command line changed
        impls = {c.impl for c in OK_CASES}
        kept = filter_cases(OK_CASES, parse_filters(filter_text(args), impls))
        assert kept == [case]


def test_a_function_case_reruns_with_its_function(tmp_path):
    case = Case(impl="fn:mypkg.attn:attention", seq_len=64)
    plan = Plan(suite="tiny", suite_path=None, filters={}, overrides={}, timing=TimingSettings(),
                cases=(case,), extra={"suite_arg": "smoke"})
    run = RunDir(tmp_path / "run")
    run.start(plan, env={"suite": "tiny"})
    run.open_for_append()
    run.append(measured(case))
    run.close()
    command = pd.read_csv(io.StringIO(export_run(run.path, "csv")))["command"][0]
    args = build_parser().parse_args(shlex.split(command)[1:])
    assert args.fn == ["mypkg.attn:attention"] and "fn:mypkg.attn:attention" in command


# ---- github-action-benchmark -----------------------------------------------------------------

def entry_types(entries: list[dict]) -> tuple[set, dict]:
    """(keys every entry has, key -> JSON type) of a customSmallerIsBetter list."""
    required = set.intersection(*(set(e) for e in entries))
    types = {}
    for entry in entries:
        for key, value in entry.items():
            types.setdefault(key, set()).add("number" if isinstance(value, (int, float))
                                             and not isinstance(value, bool) else
                                             type(value).__name__)
    return required, types


def test_github_action_benchmark_entries_have_the_documented_shape(run_dir):
    sample = json.loads((DATA / "github-action-benchmark/customSmallerIsBetter.json").read_text())
    required, types = entry_types(sample)
    assert required == {"name", "unit", "value"}
    ours = json.loads(export_run(run_dir, "github-action-benchmark"), parse_constant=refuse)
    assert isinstance(ours, list) and len(ours) == len(OK_CASES)
    our_required, our_types = entry_types(ours)
    assert required <= our_required and set(our_types) <= set(types)
    assert all(our_types[key] <= types[key] for key in our_types), (our_types, types)
    assert len({e["name"] for e in ours}) == len(ours)
    first = ours[0]
    assert first["unit"] == "ns" and first["value"] == pytest.approx(32e-6 * 1e9)
    assert first["name"] == OK_CASES[0].case_id and first["range"].startswith("± ")
    assert "TFLOP/s: 0.25" in first["extra"] and "rerun: attnbench run" in first["extra"]
    assert "kernel: math" in ours[4]["extra"] and "GB/s: 12.5" in ours[4]["extra"]
    assert ["unstable: measured under contention" in e["extra"] for e in ours] == \
        [False] * 6 + [True] * 2  # torch.sdpa at seq_len 64


# ---- Bencher ---------------------------------------------------------------------------------

def bmf_problems(metrics) -> list[str]:
    """What makes `metrics` unlike Bencher Metric Format JSON: benchmark names (at most 1024
    characters) to measure slugs (at most 64) to metrics of finite numbers, `value` required,
    lower_value <= value <= upper_value."""
    problems = []
    if not isinstance(metrics, dict) or not metrics:
        return ["expected a non-empty JSON object"]
    for name, measures in metrics.items():
        if not (0 < len(name) <= 1024) or not isinstance(measures, dict) or not measures:
            problems.append(f"benchmark {name!r}: expected a name and its measures")
            continue
        for slug, metric in measures.items():
            numbers = metric if isinstance(metric, dict) else {}
            if not (0 < len(slug) <= 64) or "value" not in numbers \
                    or set(numbers) - {"value", "lower_value", "upper_value"}:
                problems.append(f"{name} {slug}: expected value, lower_value?, upper_value?")
            elif not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                         and math.isfinite(v) for v in numbers.values()):
                problems.append(f"{name} {slug}: a value that is not a finite number")
            elif not (numbers.get("lower_value", numbers["value"]) <= numbers["value"]
                      <= numbers.get("upper_value", numbers["value"])):
                problems.append(f"{name} {slug}: expected lower_value <= value <= upper_value")
    return problems


def test_bencher_metrics_have_the_documented_shape(run_dir):
    sample = json.loads((DATA / "bencher/bmf-example.json").read_text())
    assert bmf_problems(sample) == []  # the checker accepts the documented example
    assert bmf_problems({"b": {"latency": {"value": 2.0, "lower_value": 3.0}}})  # and refuses
    ours = json.loads(export_run(run_dir, "bencher"), parse_constant=refuse)
    assert bmf_problems(ours) == []
    assert list(ours) == [c.case_id for c in OK_CASES]
    latency = ours[OK_CASES[0].case_id]["latency"]
    assert latency == pytest.approx({"value": 32e3, "lower_value": 32e3 * 0.98,
                                     "upper_value": 32e3 * 1.03})  # nanoseconds
    assert ours[OK_CASES[4].case_id]["gbps"] == {"value": 12.5}
    assert "gbps" not in ours[OK_CASES[0].case_id]
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(ours, json.loads((DATA / "bencher/bmf.schema.json").read_text()))


def test_an_interval_that_misses_the_median_is_left_out_of_bencher(tmp_path):
    run = RunDir(tmp_path)
    run.open_for_append()
    run.append(measured(OK_CASES[0], ci_low_s=1.0, ci_high_s=2.0))
    run.close()
    ours = json.loads(export_run(tmp_path, "bencher"))
    assert ours == {OK_CASES[0].case_id: {"latency": {"value": pytest.approx(32e3)},
                                          "tflops": {"value": 0.25},
                                          "peak-memory": {"value": 4096.0 * 32}}}
    assert bmf_problems(ours) == []


# ---- the command -----------------------------------------------------------------------------

def test_export_writes_stdout_or_a_file(run_dir, tmp_path, capsys):
    assert main(["export", str(run_dir), "--format", "bencher"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(export_run(run_dir, "bencher"))
    out = tmp_path / "bench.json"
    assert main(["export", str(run_dir), "--format", "github-action-benchmark",
                 "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == json.loads(export_run(run_dir,
                                                                "github-action-benchmark"))
    assert main(["export", str(run_dir)]) == 0  # csv by default
    assert capsys.readouterr().out.startswith(",".join(EXPORT_COLUMNS[:3]))
    assert all(name in FORMAT_NAMES for name in FORMATS)  # the help names every format


@pytest.mark.parametrize("args, words", [
    (["export", "{tmp}"], "is not a run directory"),
    (["export", "{run}", "--format", "asv"], "--format: unknown format 'asv'"),
    (["export", "{run}", "--out", "{tmp}"], "--out: "),
])
def test_mistakes_are_one_line_and_exit_2(run_dir, tmp_path, capsys, args, words):
    argv = [a.format(tmp=tmp_path / "elsewhere", run=run_dir) for a in args]
    (tmp_path / "elsewhere").mkdir()
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and words in captured.err
    assert len(captured.err.strip().splitlines()) == 1
