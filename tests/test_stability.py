"""Figures that stay true on a busy machine: the contention detector, the repeat statistics,
implausible figures, and the gate's rules, on synthetic signals and data, plus the detector on
real busy processes and the runner's re-measurement end to end."""
import json
import math
import multiprocessing
import time

import numpy as np
import pytest

from harness.analysis import compare, stability
from harness.measure import contention, repeats
from harness.measure.timer import Samples, Timer
from harness.spec import TimingSettings
from harness.store import load_records


def reading(t_s, cpu_s=0.0, invol=0, wait_s=0.0, pressure_s=0.0, steal=(0, 0), busy=None,
            threads=None):
    return contention.Reading(wall_ns=int(t_s * 1e9), cpu_s=cpu_s, involuntary=invol,
                              wait_ns=int(wait_s * 1e9), pressure_us=int(pressure_s * 1e6),
                              steal_ticks=steal, busy_ticks=busy, threads=threads)


# ---- the detector -------------------------------------------------------------------------

def test_signals_are_shares_of_the_window():
    before = reading(10.0, cpu_s=1.0, invol=100, wait_s=2.0, pressure_s=5.0, steal=(0, 1000))
    after = reading(10.5, cpu_s=1.8, invol=150, wait_s=2.3, pressure_s=5.1, steal=(20, 1100))
    figures = contention.signals(before, after, threads=2)
    assert figures["window_s"] == pytest.approx(0.5)
    assert figures["run_queue_wait"] == pytest.approx(0.6)
    assert figures["cpu_pressure"] == pytest.approx(0.2)
    assert figures["steal"] == pytest.approx(0.2)
    assert figures["involuntary_switches_per_s"] == pytest.approx(100)
    assert figures["cpu_per_thread"] == pytest.approx(0.8)


def test_quiet_windows_pass_and_busy_ones_are_named():
    quiet = {"window_s": 0.3, "cpu_pressure": 0.05, "run_queue_wait": 0.9, "steal": 0.0}
    assert contention.verdict(quiet) is None  # pressure decides where it exists
    busy = dict(quiet, cpu_pressure=0.5)
    assert "50%" in contention.verdict(busy) and "--threads" in contention.verdict(busy)
    no_psi = {"window_s": 0.3, "cpu_pressure": None, "run_queue_wait": 0.6, "steal": None}
    assert "60%" in contention.verdict(no_psi)
    assert contention.verdict(dict(no_psi, run_queue_wait=0.1)) is None
    stolen = dict(quiet, steal=0.3)
    assert "hypervisor" in contention.verdict(stolen)
    assert contention.verdict(None) is None


def test_other_processes_cpu_is_the_machines_busy_time_less_this_workers_own():
    tick = contention.TICKS_PER_S
    before = reading(10.0, cpu_s=1.0, busy=0, threads=3)
    after = reading(10.5, cpu_s=1.6, busy=int(1.1 * tick), threads=5)  # 1.1 s busy, 0.6 own
    figures = contention.signals(before, after, threads=2)
    assert figures["other_cpu"] == pytest.approx(1.0, abs=0.05)  # 0.5 s of others in 0.5 s
    assert figures["own_threads"] == 5 and figures["cores"] == contention.cores()
    short = contention.signals(reading(0.0, busy=0), reading(0.1, busy=tick), threads=1)
    assert short["other_cpu"] is None  # 10 ms ticks cannot tell in a 0.1 s window


def test_own_threads_are_not_other_programs():
    waited = {"window_s": 0.5, "cpu_pressure": 0.4, "run_queue_wait": 0.8, "steal": 0.0,
              "own_threads": 40, "cores": 2}
    own = dict(waited, other_cpu=0.05)
    assert contention.verdict(own) is None  # how it runs, not a disturbance
    assert "40 threads on 2 cores" in contention.oversubscription(own)
    assert "other processes took only 0.05 cores" in contention.oversubscription(own)
    record = Samples((1e-3,) * 3, contention=own).to_record()
    assert record["stable"] is True and "oversubscribed" in record["contention"]["oversubscribed"]
    others = dict(waited, other_cpu=0.95)
    assert "other processes took 0.95 cores" in contention.verdict(others)
    assert contention.oversubscription(others) is None
    assert Samples((1e-3,) * 3, contention=others).to_record()["stable"] is False
    undecided = dict(waited, other_cpu=None)  # a window too short for the ticks
    assert "more threads of its own than cores" in contention.verdict(undecided)
    assert contention.oversubscription(undecided) is None
    quiet = dict(waited, cpu_pressure=0.1, other_cpu=0.9)  # others busy on spare cores
    assert contention.verdict(quiet) is None and contention.oversubscription(quiet) is None


def test_steal_is_not_judged_on_windows_shorter_than_its_ticks():
    before = reading(0.0, steal=(0, 100))
    after = reading(0.05, steal=(5, 105))
    assert contention.signals(before, after, 1)["steal"] is None


def test_missing_counters_give_none_not_zero():
    before = contention.Reading(0, 0.0, 0, None, None, None)
    after = contention.Reading(int(1e9), 0.5, 3, None, None, None)
    figures = contention.signals(before, after, 1)
    assert figures["run_queue_wait"] is None and figures["cpu_pressure"] is None
    assert contention.verdict(figures) is None


def test_a_record_without_signals_is_not_called_stable():
    record = Samples((1e-3, 1.1e-3, 0.9e-3)).to_record()
    assert record["stable"] is None and record["instability"] is None
    watched = Samples((1e-3,) * 3, contention={"cpu_pressure": 0.6}).to_record()
    assert watched["stable"] is False and "competed" in watched["instability"]


def _spin(stop_at):
    while time.time() < stop_at:
        pass


def _work():
    a = np.random.default_rng(0).random((200, 200))
    for _ in range(20):
        a = np.tanh(a @ a / 200.0)
    return a


@pytest.mark.skipif(not contention._pressure_us() and not contention._run_queue_wait_ns(),
                    reason="no CPU pressure or schedstat counters on this kernel")
def test_busy_processes_beside_the_timer_are_detected():
    cores = multiprocessing.cpu_count()
    stop_at = time.time() + 30
    ctx = multiprocessing.get_context("spawn")
    busy = [ctx.Process(target=_spin, args=(stop_at,), daemon=True) for _ in range(cores)]
    for p in busy:
        p.start()
    try:
        time.sleep(0.5)
        settings = TimingSettings(warmup_s=0.05, budget_s=0.4, min_samples=5, target_ci=1e-9)
        record = Timer(_work, lambda: None, settings).measure().to_record()
    finally:
        for p in busy:
            p.kill()
            p.join()
    assert record["stable"] is False, record["contention"]
    assert record["instability"]
    if record["contention"]["other_cpu"] is not None:  # whose: the busy processes beside it
        assert record["contention"]["other_cpu"] > contention.LIMITS["other_cpu"]
        assert "other programs" in record["instability"]


# ---- implausible figures --------------------------------------------------------------------

def rec(seq_len, median, impl="x", status="ok", **extra):
    return {"case_id": f"{impl}/{seq_len}", "impl": impl, "status": status, "seq_len": seq_len,
            "seq_len_kv": seq_len, "median_s": median, "level": "kernel", "mode": "fwd",
            "device": "cpu", "dtype": "float32", "batch": 1, "heads": 8, "head_dim": 64,
            "causal": False, "seed": 0, "padding": 0.0, "norm": "post", "ffn_mult": 4, **extra}


def test_a_figure_slower_than_a_larger_problem_is_implausible():
    records = [rec(128, 8e-3), rec(256, 1.1e-3), rec(512, 4e-3), rec(1024, 16e-3)]
    found = stability.implausible(records)
    assert list(found) == ["x/128"]
    assert "7.3x" in found["x/128"] and "256" in found["x/128"]


def test_a_figure_that_grew_faster_than_any_attention_can_is_implausible():
    records = [rec(32, 24e-6), rec(64, 9.3e-3)]
    found = stability.implausible(records)
    assert list(found) == ["x/64"] and "387x" in found["x/64"] and "N^4" in found["x/64"]
    cliff = [rec(512, 4.96e-3), rec(1024, 52.4e-3)]  # a score matrix leaving the cache: real
    assert stability.implausible(cliff) == {}


def test_small_wobbles_and_other_configurations_are_not_implausible():
    records = [rec(128, 1.4e-3), rec(256, 1.0e-3), rec(512, 4e-3),
               rec(128, 9e-3, impl="y"), rec(256, 10e-3, impl="y"),
               rec(64, 9e-3, impl="z"), rec(128, 1e-3, impl="z", status="error")]
    assert stability.implausible(records) == {}


def test_a_figure_faster_than_the_machine_is_implausible():
    gib = 2**30
    found = stability.implausible([
        rec(128, 1e-3, pct_of_peak=180.0),                                   # past the matmul
        rec(128, 1e-3, impl="y", pct_of_bandwidth=300.0, bytes_moved=gib),    # past the memory
        rec(128, 1e-3, impl="z", pct_of_bandwidth=300.0, bytes_moved=2**20),  # from a cache
        rec(128, 1e-3, impl="w", pct_of_peak=180.0, dtype="bfloat16"),       # float32 inside
        rec(128, 1e-3, impl="v", pct_of_peak=110.0, pct_of_bandwidth=110.0, bytes_moved=gib)])
    assert sorted(found) == ["x/128", "y/128"]
    assert "matmul peak" in found["x/128"] and "copy bandwidth" in found["y/128"]


# ---- repeat statistics ---------------------------------------------------------------------

def timed(samples, **extra):
    return {**Samples(tuple(samples), contention={"cpu_pressure": 0.0}).to_record(),
            "max_abs_err": 1e-7, "kernel": "k", "peak_mem_bytes": 100, **extra}


def test_one_repeat_is_its_own_record():
    one = timed([1e-3, 1.1e-3, 0.9e-3, 1.0e-3, 1.05e-3, 0.95e-3])
    merged = repeats.combine([one], target_ci=0.02)
    assert merged["median_s"] == one["median_s"] and merged["ci_low_s"] == one["ci_low_s"]
    assert merged["repeat_medians_s"] == [one["median_s"]]
    assert merged["repeat_n_samples"] == [6]


def test_repeats_give_the_geometric_mean_and_an_interval_from_their_spread():
    rng = np.random.default_rng(1)
    parts = [timed(m * (1 + 0.001 * rng.standard_normal(30))) for m in (1e-3, 1.2e-3, 0.9e-3)]
    merged = repeats.combine(parts, target_ci=0.02)
    medians = merged["repeat_medians_s"]
    assert merged["median_s"] == pytest.approx(math.exp(np.mean(np.log(medians))))
    assert merged["ci_low_s"] < min(medians) and merged["ci_high_s"] > max(medians)
    assert merged["n_samples"] == 90 and merged["repeat_n_samples"] == [30, 30, 30]
    assert merged["converged"] is False  # 3 processes 30% apart are not a 2% figure


def test_repeats_that_agree_by_chance_keep_their_samples_precision():
    rng = np.random.default_rng(2)
    parts = [timed(1e-3 * (1 + 0.05 * rng.standard_normal(40))) for _ in range(2)]
    parts[1]["median_s"] = parts[0]["median_s"]  # zero spread between the two repeats
    merged = repeats.combine(parts, target_ci=0.02)
    assert merged["ci_high_s"] > merged["ci_low_s"] * 1.001


def test_repeats_nobody_watched_are_not_called_stable():
    unwatched = [{**Samples((1e-3,) * 8).to_record(), "peak_mem_bytes": None} for _ in range(2)]
    assert repeats.combine(unwatched, target_ci=0.02)["stable"] is None


def test_split_undoes_combine_with_each_repeats_own_verdict():
    clean = timed([1e-3] * 10)
    busy = {**timed([2e-3] * 12), **Samples((2e-3,) * 12, contention={"cpu_pressure": 0.7})
            .to_record()}
    merged = repeats.combine([clean, busy], target_ci=0.02)
    assert merged["stable"] is False and merged["instability"].startswith("1 of 2 repeats:")
    parts = repeats.split(merged)
    assert [p["n_samples"] for p in parts] == [10, 12]
    assert [p["median_s"] for p in parts] == [1e-3, 2e-3]
    assert [p["stable"] for p in parts] == [True, False]
    again = repeats.combine(parts, target_ci=0.02)
    assert again["instability"] == merged["instability"]  # no nesting on a resumed run


def _process_medians(rng, true_s, repeats_n, between=0.08, within=0.03, n=30):
    return [timed(true_s * math.exp(between * rng.standard_normal())
                  * (1 + within * rng.standard_normal(n))) for _ in range(repeats_n)]


def test_the_repeat_interval_covers_the_truth_at_its_level_on_synthetic_processes():
    rng = np.random.default_rng(3)
    hits = 0
    for _ in range(400):
        merged = repeats.combine(_process_medians(rng, 1e-3, 3), target_ci=0.02)
        hits += merged["ci_low_s"] <= 1e-3 <= merged["ci_high_s"]
    assert hits / 400 >= 0.9


# ---- the gate ------------------------------------------------------------------------------

def case_record(parts, **extra):
    merged = repeats.combine(parts, target_ci=0.02)
    return {**rec(256, merged["median_s"]), **merged, **extra}


def test_repeats_rule_is_calibrated_on_a_a_and_sees_a_real_slowdown():
    rng = np.random.default_rng(4)
    false_alarms = covered = detected = 0
    trials = 200
    for _ in range(trials):
        base = case_record(_process_medians(rng, 1e-3, 3))
        same = case_record(_process_medians(rng, 1e-3, 3))
        slower = case_record(_process_medians(rng, 2e-3, 3))
        aa = compare.judge_case(base, same)
        assert aa["rule"] == "repeats"
        false_alarms += aa["verdict"] == "regression"
        covered += aa["ci_low"] <= 1.0 <= aa["ci_high"]
        detected += compare.judge_case(base, slower)["verdict"] == "regression"
    assert false_alarms <= 0.02 * trials
    assert covered >= 0.9 * trials
    assert detected >= 0.5 * trials


def test_single_runs_need_the_run_to_run_allowance_on_a_host_timer():
    rng = np.random.default_rng(5)
    base = {**rec(256, 1e-3), **timed(1e-3 * (1 + 0.01 * rng.standard_normal(100)))}
    slower = {**rec(256, 1e-3), **timed(1.3e-3 * (1 + 0.01 * rng.standard_normal(100)))}
    much = {**rec(256, 1e-3), **timed(4.0e-3 * (1 + 0.01 * rng.standard_normal(100)))}
    row = compare.judge_case(base, slower)
    assert row["rule"] == "single run" and row["verdict"] != "regression"
    assert "single-process runs" in row["note"] and "3x" in row["note"]
    assert compare.judge_case(base, much)["verdict"] == "regression"
    # the same 30% between two sides of an A/B (interleaved) is a regression
    assert compare.judge_case(base, slower, interleaved=True)["verdict"] == "regression"


def test_an_unstable_case_is_never_a_regression_or_an_improvement():
    rng = np.random.default_rng(6)
    base = {**rec(256, 1e-3), **timed(1e-3 * (1 + 0.01 * rng.standard_normal(100)))}
    slower = {**rec(256, 1e-3), **timed(3e-3 * (1 + 0.01 * rng.standard_normal(100))),
              "stable": False, "instability": "busy"}
    for a, b in ((base, slower), (slower, base)):
        row = compare.judge_case(a, b)
        assert row["verdict"] == "noisy" and "unstable" in row["note"]
    result = compare.compare_records([base], [slower])
    assert result["verdict"] == "pass" and result["rules"]["single run"] == 1


# ---- the runner, end to end ----------------------------------------------------------------

SUITE = """
name = "stab"
[sweep]
impls = ["numpy"]
dtype = ["float32"]
batch = 1
heads = 2
seq_len = [32, 128]
head_dim = 16
causal = [false]
[timing]
warmup_s = 0.005
min_samples = 5
max_samples = 30
budget_s = 0.05
"""


def run_suite(tmp_path, run_cli, *args, env=None):
    """SUITE run into tmp_path/run with `args`; the run directory (the run must succeed)."""
    suite = tmp_path / "stab.toml"
    suite.write_text(SUITE)
    out = tmp_path / "run"
    done = run_cli("run", suite, "--out", out, *args, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return out, done


def lines_of(run_dir):
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]


def pids_of(run_dir) -> dict[str, set]:
    """case_id -> the worker processes that ran it (from the numpy worker's log)."""
    runs: dict[str, set] = {}
    for line in (run_dir / "logs" / "worker-numpy.log").read_text().splitlines():
        if line.startswith("--- run "):
            _, _, case_id, _, pid = line.split()
            runs.setdefault(case_id, set()).add(pid)
    return runs


def test_a_disturbed_figure_is_measured_again_and_the_clean_one_kept(tmp_path, run_cli):
    (tmp_path / "once").mkdir()
    env = {"ATTNBENCH_PLUGINS": "tests.plugins.slow", "ATTNBENCH_TEST_SLOWDOWN": "40",
           "ATTNBENCH_TEST_SLOW_SEQ_LEN": "32",
           "ATTNBENCH_TEST_SLOW_ONCE_DIR": str(tmp_path / "once")}
    out, _ = run_suite(tmp_path, run_cli, "--no-report", env=env)
    small = [r for r in lines_of(out) if r["seq_len"] == 32]
    assert len(small) >= 2  # the disturbed measurement, then the one that replaced it
    assert small[0]["median_s"] > 5 * small[-1]["median_s"]
    final = {r["seq_len"]: r for r in load_records(out)}
    assert final[32]["remeasured"] >= 1 and final[32] == small[-1]
    assert "larger seq_len" not in (final[32]["instability"] or "")  # no longer implausible
    assert len(pids_of(out)[small[0]["case_id"]]) == 1  # measured again in the pass's worker


def test_a_figure_that_stays_implausible_is_kept_and_marked(tmp_path, run_cli):
    env = {"ATTNBENCH_PLUGINS": "tests.plugins.slow", "ATTNBENCH_TEST_SLOWDOWN": "40",
           "ATTNBENCH_TEST_SLOW_SEQ_LEN": "32"}
    out, done = run_suite(tmp_path, run_cli, env=env)
    final = {r["seq_len"]: r for r in load_records(out)}
    assert final[32]["stable"] is False and "larger seq_len 128" in final[32]["instability"]
    assert final[32]["remeasured"] == 2 and final[128]["stable"] is not False
    assert "1 of 2 figures are unstable" in done.stdout
    assert "~" in (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    assert 'id="unstable-table"' in html and "larger seq_len 128" in html
    fits = json.loads((out / "scaling.json").read_text())["fits"]
    assert all(f["left_out"] == [32] for f in fits if f["metric"] == "time")


def test_repeats_measure_each_case_in_fresh_processes(tmp_path, run_cli):
    out, _ = run_suite(tmp_path, run_cli, "--no-report", "--repeats", "3")
    records = load_records(out)
    assert all(len(r["repeat_medians_s"]) == 3 for r in records)
    assert all(r["n_samples"] == sum(r["repeat_n_samples"]) for r in records)
    runs = pids_of(out)
    assert {r["case_id"] for r in records} <= set(runs)
    assert all(len(pids) >= 3 for pids in runs.values())  # one process per repeat
    plan = json.loads((out / "plan.json").read_text())
    assert plan["timing"]["repeats"] == 3


def test_resume_keeps_the_repeats_already_recorded(tmp_path, run_cli):
    out, _ = run_suite(tmp_path, run_cli, "--no-report", "--repeats", "2")
    first_pass = [line for line in (out / "results.jsonl").read_text().splitlines()
                  if len(json.loads(line)["repeat_medians_s"]) == 1]
    # cut off after pass one, by a version that wrote a field this one does not know
    newer = [json.dumps({**json.loads(line), "from_a_newer_version": 1}) for line in first_pass]
    (out / "results.jsonl").write_text("\n".join(newer) + "\n")
    kept = {json.loads(line)["case_id"]: json.loads(line)["repeat_medians_s"][0]
            for line in first_pass}
    (out / "logs" / "worker-numpy.log").unlink()
    run_suite(tmp_path, run_cli, "--no-report", "--repeats", "2", "--resume")
    records = load_records(out)
    assert {r["case_id"] for r in records} == set(kept)
    for r in records:
        # the recorded repeat is kept, unless re-measurement dropped it (contended or slowest),
        # which a busy machine may call for and the record then says
        assert len(r["repeat_medians_s"]) == 2
        assert kept[r["case_id"]] in r["repeat_medians_s"] or r["remeasured"], r
    runs = [line for line in (out / "logs" / "worker-numpy.log").read_text().splitlines()
            if line.startswith("--- run ")]
    assert len(runs) >= len(kept)  # one more measurement each (more only if one was disturbed)
    assert len(runs) <= 3 * len(kept)
