"""End to end through the command line: every case recorded exactly once, failures contained,
interrupted runs resumed, bad input refused with one line and exit code 2."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import registry
from harness.spec import load_suite
from harness.store import load_records

ROOT = Path(__file__).resolve().parent.parent

FAULTY = {"ATTNBENCH_PLUGINS": "tests.plugins.faulty"}


def write_suite(tmp_path, body: str, name="s") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(body)
    return path


def ids_of(run_dir) -> list[str]:
    return [r["case_id"] for r in load_records(run_dir)]


def test_smoke_suite_records_every_case_exactly_once(smoke_run):
    out, result = smoke_run
    assert result.returncode == 0, result.stdout + result.stderr
    levels = {name: adapter.level for name, adapter in registry.adapters().items()}
    expected = {c.case_id for c in load_suite("smoke", levels).cases()}
    recorded = ids_of(out)
    assert len(recorded) == len(set(recorded)) == len(expected)
    assert set(recorded) == expected
    records = load_records(out)
    by_impl = {}
    for r in records:
        by_impl.setdefault(r["impl"], set()).add(r["status"])
    assert by_impl["numpy"] == {"ok"} and by_impl["torch.sdpa"] == {"ok"}
    assert by_impl["xformers"] == {"unsupported"}
    for r in records:
        if r["status"] == "ok":
            assert r["max_abs_err"] <= r["tolerance"]
            assert r["ci_low_s"] <= r["median_s"] <= r["ci_high_s"]
            assert len(r["samples_s"]) == r["n_samples"] >= 3
            assert r["threads"] >= 1
        else:
            assert r["reason"]
    env = json.loads((out / "env.json").read_text())
    assert env["packages"]["torch"] and env["threads"] >= 1 and "commit" in env["git"]
    assert env["workers"]["torch"]["threads"] == env["threads"]
    latency = (out / "report.md").read_text().split("## Median latency")[1].split("\n## ")[0]
    assert latency.count("| numpy |") == 2  # one row per mask
    assert "the answer" in result.stdout and str(out) in result.stdout
    assert "median latency" not in result.stdout  # the report's table (or --verbose's)


def test_the_progress_counter_counts_the_planned_cases(smoke_run):
    out, result = smoke_run
    planned = len(json.loads((out / "plan.json").read_text())["case_ids"])
    counters = re.findall(r"^\[\s*(\d+)/(\d+)\]", result.stdout, re.M)
    assert {int(total) for _, total in counters} == {planned}
    assert sorted(int(n) for n, _ in counters) == list(range(1, planned + 1))


def test_compare_json_goes_to_stdout_and_json_out_to_a_file(smoke_run, tmp_path, run_cli):
    out, _ = smoke_run
    printed = run_cli("compare", out, out, "--json")
    assert printed.returncode in (0, 1), printed.stderr
    assert printed.stdout.lstrip().startswith("{")
    keys = set(json.loads(printed.stdout))
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    for option, path in (("--json", old), ("--json-out", new)):
        written = run_cli("compare", out, out, option, path)
        assert written.returncode == printed.returncode, written.stderr
        assert set(json.loads(path.read_text())) == keys
        assert f"json: {path}" in written.stdout
    both = run_cli("compare", out, out, "--json", old, "--json-out", new)
    assert both.returncode == 2 and len(both.stderr.strip().splitlines()) == 1
    assert "--json-out" in both.stderr


def test_report_says_on_the_console_which_damaged_lines_it_skipped(smoke_run, tmp_path, run_cli):
    out, _ = smoke_run
    damaged = tmp_path / "run"
    shutil.copytree(out, damaged)
    lines = (damaged / "results.jsonl").read_text().split("\n")
    lines[3] = '{"not a record'
    (damaged / "results.jsonl").write_text("\n".join(lines) + '{"case_id": "half-writ')
    result = run_cli("report", damaged, "--format", "md")
    assert result.returncode == 0, result.stderr
    warning = result.stderr.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith("warning: ")
    assert "line 4 skipped" in warning[0] and "cut off mid-write" in warning[0]


def test_failures_are_contained_and_named(tmp_path, run_cli):
    suite = write_suite(tmp_path, """
[sweep]
impls = ["numpy", "fault.unscaled", "fault.raises", "fault.nomemory", "fault.crashes",
         "fault.hangs"]
seq_len = [16, 32]
heads = 2
head_dim = 8
[timing]
warmup_s = 0.001
budget_s = 0.01
timeout_s = 4
""")
    out = tmp_path / "run"
    result = run_cli("run", suite, "--out", out, env=FAULTY)
    assert result.returncode == 1, result.stdout + result.stderr
    records = load_records(out)
    assert len(records) == len({r["case_id"] for r in records}) == 12
    status = {r["impl"]: r["status"] for r in records}
    assert status == {"numpy": "ok", "fault.unscaled": "mismatch", "fault.raises": "error",
                      "fault.nomemory": "oom", "fault.crashes": "error", "fault.hangs": "timeout"}
    reasons = {r["impl"]: r["reason"] for r in records}
    assert "deliberate failure" in reasons["fault.raises"]
    assert "SIGABRT" in reasons["fault.crashes"]
    assert "4 s" in reasons["fault.hangs"]
    assert "tolerance" in reasons["fault.unscaled"]
    assert "MISMATCH" in result.stdout


def _slow_suite(tmp_path):
    return write_suite(tmp_path, """
[sweep]
impls = ["numpy"]
seq_len = [8, 16, 24, 32, 40, 48, 56, 64]
heads = 2
head_dim = 8
[timing]
warmup_s = 0.01
min_samples = 5
target_ci = 0.000001
budget_s = 0.4
""")


def _start_and_wait_for_records(suite, out, count):
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(suite), "--out",
                             str(out)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 120
    results = out / "results.jsonl"
    while time.time() < deadline:
        if results.exists() and results.read_text().count("\n") >= count:
            return proc
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the run recorded nothing in time")


@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_an_interrupted_run_resumes_to_every_case_exactly_once(tmp_path, run_cli, how):
    suite = _slow_suite(tmp_path)
    out = tmp_path / "run"
    proc = _start_and_wait_for_records(suite, out, 2)
    proc.send_signal(getattr(signal, how))
    stdout, _ = proc.communicate(timeout=60)
    partial = ids_of(out)
    assert 2 <= len(partial) < 8
    # the report reads the plan: it names the planned cases that have no record
    report = run_cli("report", out, "--format", "md")
    assert report.returncode == 0, report.stdout + report.stderr
    planned = json.loads((out / "plan.json").read_text())["case_ids"]
    missing = [i for i in planned if i not in partial]
    text = (out / "report.md").read_text()
    assert f"{len(partial)} of 8 cases recorded, {len(missing)} missing" in text
    assert all(i in text for i in missing[:5])
    if how == "SIGINT":
        assert proc.returncode == 130
        assert "--resume" in stdout
    again = run_cli("run", suite, "--out", out)
    assert again.returncode == 2 and "--resume" in again.stderr
    resumed = run_cli("run", suite, "--out", out, "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    final = ids_of(out)
    assert len(final) == len(set(final)) == 8
    assert final[: len(partial)] == partial


@pytest.mark.parametrize("body, key", [
    ('[sweep]\nimpls = ["numpy"]\nseq_len = 8\nheadz = 2\n', "'sweep.headz'"),
    ('[sweep]\nimpls = ["numpy"]\nseq_len = [64, -1]\n', "'sweep.seq_len'"),
    ('[sweep]\nimpls = ["numpyy"]\nseq_len = 8\n', "'sweep.impls'"),
    ('[sweep]\nimpls = ["numpy"]\nseq_len = 8\ndtype = "fp8"\n', "'sweep.dtype'"),
    ('[sweep]\nimpls = ["numpy"]\nseq_len = 8\nbatch = 1.5\n', "'sweep.batch'"),
])
def test_a_bad_suite_exits_2_with_one_line_before_running(tmp_path, run_cli, body, key):
    suite = write_suite(tmp_path, body)
    out = tmp_path / "run"
    result = run_cli("run", suite, "--out", out)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(suite) in lines[0] and key in lines[0] and "expected" in lines[0]
    assert "Traceback" not in result.stderr
    assert not out.exists()


@pytest.mark.parametrize("args, words", [
    (["--seq-len", "abc"], "--seq-len"),
    (["--dtype", "float8"], "--dtype"),
    (["--impl", "nothing*"], "--impl"),
    (["--seq-len", "4096"], "leave no case"),
    (["--threads", "0"], "--threads"),
])
def test_bad_filters_exit_2_with_one_line(tmp_path, run_cli, args, words):
    result = run_cli("run", "smoke", "--out", tmp_path / "run", *args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and words in result.stderr


def test_filters_narrow_the_suite(tmp_path, run_cli):
    out = tmp_path / "run"
    result = run_cli("run", "smoke", "--out", out, "--impl", "torch.sdpa*", "--seq-len", "32",
                     "--causal", "false")
    assert result.returncode == 0, result.stderr
    assert {r["impl"] for r in load_records(out)} == {
        "torch.sdpa", "torch.sdpa.math", "torch.sdpa.flash", "torch.sdpa.efficient", "torch.sdpa.cudnn"}
    assert {(r["seq_len"], r["causal"]) for r in load_records(out)} == {(32, False)}


def test_list_shows_every_implementation_and_why_one_cannot_run(run_cli):
    result = run_cli("list")
    assert result.returncode == 0
    for name in registry.adapters():
        assert name in result.stdout
    assert "xformers" in result.stdout


def test_report_of_a_missing_run_is_a_usage_error(tmp_path, run_cli):
    result = run_cli("report", tmp_path)
    assert result.returncode == 2 and "not a run directory" in result.stderr


def test_a_memory_limit_turns_large_cases_into_oom_and_skips_larger_ones(tmp_path, run_cli):
    suite = write_suite(tmp_path, """
[sweep]
impls = ["numpy", "torch.naive", "torch.sdpa.flash"]
seq_len = [128, 256, 1024, 2048]
heads = 8
head_dim = 64
[timing]
warmup_s = 0.001
min_samples = 3
budget_s = 0.05
""")
    out = tmp_path / "run"
    result = run_cli("run", suite, "--out", out, "--mem-limit", "32MiB")
    assert result.returncode == 1, result.stdout + result.stderr
    records = {(r["impl"], r["seq_len"]): r for r in load_records(out)}
    assert len(records) == 12
    for impl in ("numpy", "torch.naive"):
        for n in (128, 256):
            assert records[(impl, n)]["status"] == "ok"
        tried = records[(impl, 1024)]
        assert tried["status"] == "oom" and not tried["predicted"]
        assert tried["oom_bytes"] and tried["oom_bytes"] >= 8 * 1024 * 1024 * 4 * 0.9
        skipped = records[(impl, 2048)]
        assert skipped["status"] == "oom" and skipped["predicted"] is True
        assert "predicted" in skipped["reason"] and "1024" in skipped["reason"]
    for n in (128, 256, 1024, 2048):  # the memory-efficient kernel fits under the same cap
        assert records[("torch.sdpa.flash", n)]["status"] == "ok"
    assert json.loads((out / "env.json").read_text())["mem_limit_bytes"] == 32 * 2**20
    assert "OOM" in result.stdout


def test_a_killed_runner_takes_its_worker_with_it(tmp_path):
    suite = write_suite(tmp_path, """
[sweep]
impls = ["fault.hangs"]
seq_len = 16
heads = 1
head_dim = 8
[timing]
timeout_s = 600
""")
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(suite), "--out",
                             str(out)], cwd=ROOT, env={**os.environ, **FAULTY},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env_path = out / "env.json"
    deadline = time.time() + 120
    pid = None
    while time.time() < deadline and pid is None:
        if env_path.exists():
            info = json.loads(env_path.read_text()).get("workers", {}).get("numpy")
            pid = info and info["pid"]
        time.sleep(0.1)
    assert pid, "the worker never reported"
    time.sleep(0.5)  # let it enter the hanging call
    proc.kill()
    proc.wait(10)
    deadline = time.time() + 10
    while time.time() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists(), "the worker outlived its runner"


def test_resuming_a_run_with_another_suite_or_other_filters_is_refused(tmp_path, run_cli):
    suite = write_suite(tmp_path, '[sweep]\nimpls = ["numpy"]\nseq_len = [8, 16]\nheads = 1\n'
                                  'head_dim = 4\n[timing]\nbudget_s = 0.01\nwarmup_s = 0.001\n')
    out = tmp_path / "run"
    first = run_cli("run", suite, "--out", out, "--seq-len", "8", "--no-report")
    assert first.returncode == 0, first.stdout + first.stderr
    other = run_cli("run", "smoke", "--out", out, "--resume")
    assert other.returncode == 2 and "planned for another run" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1
    wider = run_cli("run", suite, "--out", out, "--resume", "--seq-len", "8,16")
    assert wider.returncode == 2 and "filters" in wider.stderr
    longer = run_cli("run", suite, "--out", out, "--resume", "--budget", "2")
    assert longer.returncode == 2 and "budget_s 0.01 vs 2.0" in longer.stderr
    same = run_cli("run", suite, "--out", out, "--resume")  # no filters: the run as planned
    assert same.returncode == 0, same.stdout + same.stderr
    assert len(ids_of(out)) == 1
    again = run_cli("run", suite, "--out", out, "--seq-len", "8", "--no-report")
    assert again.returncode == 2 and again.stderr.strip().endswith(
        f"{out} already holds 1 records; pass --resume to finish that run, or choose another "
        "directory")
