"""The regression gate: statistics on synthetic samples, status changes, memory, fingerprints,
baselines and the command's exit codes."""
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.analysis import compare, judge
from harness.cli import main
from harness.measure import timer
from harness.report import gate
from harness.spec import Case
from harness.store import baselines, capture_env, fingerprint, load_records, make_record

MS = 1e-3


def samples(rng, median, noise, n=30):
    """Log-normal timings around `median` with relative spread `noise`."""
    return median * np.exp(rng.normal(0.0, noise, n))


def noisy_samples(rng, median, n=40):
    """A busy machine: 3% jitter plus one sample in ten delayed by 20-100%."""
    x = samples(rng, median, 0.03, n)
    late = rng.random(n) < 0.1
    return np.where(late, x * rng.uniform(1.2, 2.0, n), x)


# ---- statistics on synthetic samples -------------------------------------------------------

def test_a_ten_percent_slowdown_with_low_noise_is_a_regression():
    rng = np.random.default_rng(1)
    base, new = samples(rng, 1 * MS, 0.01), samples(rng, 1.1 * MS, 0.01)
    judged = judge.judge_samples(base, new, threshold=0.05)
    assert judged["verdict"] == "regression"
    assert judged["ci_low"] > 1.05 and judged["p_slower"] < 1e-3
    assert judged["ratio"] == pytest.approx(1.1, rel=0.02)


def test_a_three_percent_slowdown_is_not():
    rng = np.random.default_rng(2)
    base, new = samples(rng, 1 * MS, 0.01), samples(rng, 1.03 * MS, 0.01)
    judged = judge.judge_samples(base, new, threshold=0.05)
    assert judged["verdict"] == "unchanged"
    assert judged["p_slower"] < 1e-3  # real, but smaller than the threshold: not a regression
    assert judged["ci_low"] < 1.05


def test_a_ten_percent_speedup_is_an_improvement():
    rng = np.random.default_rng(3)
    judged = judge.judge_samples(samples(rng, 1 * MS, 0.01), samples(rng, 0.9 * MS, 0.01))
    assert judged["verdict"] == "improvement"


@pytest.mark.parametrize("make", [lambda rng: samples(rng, 1 * MS, 0.02),
                                  lambda rng: noisy_samples(rng, 1 * MS)],
                         ids=["lognormal-2%", "busy-machine"])
def test_pure_noise_gives_no_regression_in_99_of_100_trials(make):
    verdicts = []
    for seed in range(100):
        rng = np.random.default_rng(1000 + seed)
        verdicts.append(judge.judge_samples(make(rng), make(rng))["verdict"])
    assert sum(v == "regression" for v in verdicts) <= 1
    assert sum(v == "improvement" for v in verdicts) <= 1


def test_a_slowdown_within_the_clocks_resolution_is_too_small_to_call():
    rng = np.random.default_rng(4)
    base, new = samples(rng, 50e-6, 0.01), samples(rng, 60e-6, 0.01)  # +20%, only 10 µs
    coarse = judge.judge_samples(base, new, floor_s=20e-6, rule="interleaved")
    fine = judge.judge_samples(base, new, floor_s=50e-9, rule="interleaved")
    unmeasured = judge.judge_samples(base, new, floor_s=None, rule="interleaved")
    # +20% with a tight interval is not "unchanged": too small to call on so coarse a clock
    assert coarse["verdict"] == "noisy" and "resolution" in coarse["note"]
    assert coarse["ci_low"] > 1.05
    # a clock that resolves 50 ns per call sees a 10 µs slowdown of a 50 µs kernel
    assert fine["verdict"] == "regression" and unmeasured["verdict"] == "regression"
    assert fine["note"].startswith("interleaved: 1.198x [") and "p (slower)" in fine["note"]


def test_the_resolution_per_call_is_the_coarser_sides_clock_over_its_block():
    base = {"device": "cpu", "timer": "host", "calls_per_sample": 100}
    new = {"device": "cpu", "timer": "host", "calls_per_sample": 10}
    peaks = {"cpu": {"timer_resolution_s": {"host": 200e-9}}}
    assert compare.case_resolution((base, new), (peaks, peaks)) == pytest.approx(20e-9)
    assert compare.case_resolution((base, new), (peaks, None)) == pytest.approx(2e-9)
    assert compare.case_resolution((base, new), (None, None)) is None
    graph = {"device": "cuda:0", "timer": "cuda_graph", "calls_per_sample": 4}
    gpu = {"cuda:0": {"timer_resolution_s": {"host": 1e-7, "cuda_event": 2e-6}}}
    assert compare.case_resolution((graph, graph), (gpu, gpu)) == pytest.approx(0.5e-6)


def test_the_clocks_resolution_is_measured_from_empty_blocks():
    from harness.measure import resolution
    from harness.measure.timer import HostClock

    readings = resolution.empty_readings(HostClock(), samples=500)
    assert len(readings) == 500 and (readings >= 0).all()
    assert 0 < resolution.resolution_s(readings) < 1e-3
    # the spread of the central 95%, not the clock's cost: a constant offset does not count
    assert resolution.resolution_s(np.full(100, 5e-6)) == 1e-9
    assert resolution.resolution_s(np.r_[np.zeros(50), np.full(50, 1e-7)]) == pytest.approx(1e-7)
    assert resolution.per_call({"host": 1e-6}, "host", 1000) == pytest.approx(1e-9)
    assert resolution.per_call({}, "host", 10) is None


@settings(max_examples=60, deadline=None)
@given(shift=st.floats(0.8, 1.25), noise=st.floats(0.002, 0.2), n=st.integers(5, 60),
       seed=st.integers(0, 10_000), threshold=st.sampled_from([0.02, 0.05, 0.1]))
def test_unchanged_is_said_only_of_an_interval_within_the_threshold(shift, noise, n, seed,
                                                                    threshold):
    rng = np.random.default_rng(seed)
    judged = judge.judge_samples(samples(rng, 1 * MS, noise, n),
                                   samples(rng, shift * MS, noise, n), threshold=threshold)
    if judged["verdict"] == "unchanged":
        assert 1 / (1 + threshold) <= judged["ci_low"] <= judged["ci_high"] <= 1 + threshold
    assert judged["note"].startswith("single run: ")  # the rule and the figures that decided


def test_the_smallest_detectable_slowdown_shrinks_as_theory_says():
    # samples: the log ratio's standard error goes as 1/sqrt(n); four times the samples
    # halve the excess of the detectable log ratio over what the threshold alone asks
    rng = np.random.default_rng(8)
    small = judge.judge_samples(samples(rng, 1 * MS, 0.05, 25), samples(rng, 1 * MS, 0.05, 25),
                                  threshold=0.0)
    large = judge.judge_samples(samples(rng, 1 * MS, 0.05, 400),
                                  samples(rng, 1 * MS, 0.05, 400), threshold=0.0)
    ratio = np.log(small["min_detectable_ratio"]) / np.log(large["min_detectable_ratio"])
    assert 2.8 < ratio < 5.5  # sqrt(16) = 4, within the bootstrap's own noise
    # repeats: Student's t with R - 1 degrees of freedom; more repeats, smaller detectable ratio
    mdr = {r: judge.min_detectable_ratio(0.05 / np.sqrt(r), 2 * (r - 1), 0.05, None, 1e-3)
           for r in (2, 3, 5, 10)}
    assert mdr[2] > mdr[3] > mdr[5] > mdr[10] > 1.05
    # the resolution bounds it from below: 1 µs of a 10 µs kernel cannot be seen under 1.1x
    assert judge.min_detectable_ratio(1e-6, None, 0.0, 1e-6, 10e-6) == pytest.approx(1.1)


def test_a_blind_comparison_says_so_and_how_to_see_more():
    lengths = (64, 128, 256)
    result = compare.compare_records([record(seq_len=n, seed=n, noise=0.4) for n in lengths],
                                     [record(seq_len=n, seed=n + 1, noise=0.4) for n in lengths])
    seen = result["detectable"]
    assert seen["cases"] == 3 and seen["blind"] == 3 and seen["at_target"] == 0
    blind_above = min(r["min_detectable_ratio"] for r in result["cases"])
    assert seen["blind_above"] == blind_above > 1.05
    line = gate.detectable_text(result)
    assert f"could detect only slowdowns above {blind_above:.2f}x for 3 of 3 cases" in line
    assert "attnbench ab" in line and line in gate.console_lines(result)
    assert "Power: 0 of 3 timed cases" in gate.render_markdown(result)
    tight = compare.compare_records([record(seed=1, noise=0.001)],
                                    [record(seed=2, noise=0.001)], interleaved=True)
    assert tight["detectable"] == {"target_ratio": 1.1, "cases": 1, "at_target": 1, "blind": 0,
                                   "blind_above": None}
    assert tight["cases"][0]["min_detectable_ratio"] < 1.1
    assert "could detect only" not in gate.detectable_text(tight)


def test_a_case_too_spread_to_judge_is_noisy():
    rng = np.random.default_rng(5)
    judged = judge.judge_samples(samples(rng, 1 * MS, 0.3, 10), samples(rng, 1 * MS, 0.3, 10))
    assert judged["verdict"] == "noisy"


def test_bootstrap_interval_is_seeded_and_covers_the_ratio():
    rng = np.random.default_rng(6)
    base, new = samples(rng, 1 * MS, 0.05, 50), samples(rng, 1.2 * MS, 0.05, 50)
    first = judge.bootstrap_ratio_ci(base, new)
    assert first == judge.bootstrap_ratio_ci(base, new)
    assert first[0] < np.median(new) / np.median(base) < first[1]
    assert first[0] > 1.1 and first[1] < 1.3


def test_the_gate_measures_spread_with_the_timers_ci():
    rng = np.random.default_rng(7)
    base, new = samples(rng, 1 * MS, 0.05, 40), samples(rng, 1 * MS, 0.05, 40)
    judged = judge.judge_samples(base, new)
    assert judged["base_ci_rel"] == timer.ci_rel(base)
    assert judged["new_ci_rel"] == timer.ci_rel(new)


# ---- whole runs ------------------------------------------------------------------------------

def record(impl="numpy", seq_len=64, status="ok", median=1 * MS, noise=0.01, seed=0,
           peak=None, dtype="float32", causal=False, reason=""):
    case = Case(impl=impl, seq_len=seq_len, dtype=dtype, causal=causal)
    result = {"status": status, "reason": reason, "peak_mem_bytes": peak}
    if status in ("ok", "mismatch"):
        x = samples(np.random.default_rng(seed), median, noise)
        result.update(samples_s=list(x), median_s=float(np.median(x)))
    return make_record(case, result)


@pytest.mark.parametrize("status", ["mismatch", "error", "oom", "timeout"])
def test_ok_then_failed_fails_the_gate(status):
    result = compare.compare_records([record()], [record(status=status, seed=1, reason="x")])
    row = result["cases"][0]
    assert row["verdict"] == "new_failure" and row["failing"]
    assert result["verdict"] == "fail" and compare.exit_code(result) == 1


def test_status_changes_that_do_not_fail_the_gate():
    base = [record(impl="numpy", status="error"), record(impl="torch.naive"),
            record(impl="torch.sdpa", status="error"), record(impl="xformers"),
            record(impl="torch.sdpa.math", status="unsupported")]
    new = [record(impl="numpy", seed=1), record(impl="torch.naive", status="unsupported"),
           record(impl="torch.sdpa", status="error"), record(impl="tf.naive", seed=1),
           record(impl="torch.sdpa.math", status="unsupported")]
    result = compare.compare_records(base, new)
    verdicts = {r["impl"]: r["verdict"] for r in result["cases"]}
    assert verdicts == {"numpy": "fixed", "torch.naive": "now_unsupported",
                        "torch.sdpa": "still_failing", "xformers": "missing", "tf.naive": "new",
                        "torch.sdpa.math": "unsupported"}
    assert result["verdict"] == "pass"


def test_a_new_case_that_fails_is_a_new_failure():
    result = compare.compare_records([record()], [record(seed=1), record(seq_len=128,
                                                                         status="error")])
    assert [r["verdict"] for r in result["cases"]] == ["unchanged", "new_failure"]
    assert result["verdict"] == "fail"


def test_memory_growth_beyond_the_threshold_fails_the_gate():
    mib = 1 << 20
    result = compare.compare_records(
        [record(impl="numpy", peak=10 * mib), record(impl="torch.naive", peak=10 * mib),
         record(impl="torch.sdpa", peak=100_000)],
        [record(impl="numpy", peak=12 * mib, seed=1), record(impl="torch.naive", peak=int(10.5 * mib), seed=1),
         record(impl="torch.sdpa", peak=300_000, seed=1)])
    grew = {r["impl"]: r["mem_verdict"] for r in result["cases"]}
    assert grew == {"numpy": "memory_growth", "torch.naive": None, "torch.sdpa": None}
    assert result["verdict"] == "fail" and result["counts"]["memory_growth"] == 1


def test_groups_get_the_geometric_mean_ratio():
    base = [record(seq_len=64, median=1 * MS, noise=0.0), record(seq_len=128, median=1 * MS,
                                                                 noise=0.0)]
    new = [record(seq_len=64, median=1.21 * MS, noise=0.0), record(seq_len=128, median=1 * MS,
                                                                   noise=0.0)]
    (group,) = compare.compare_records(base, new, interleaved=True)["groups"]
    assert (group["impl"], group["dtype"], group["cases"], group["noisy"]) == ("numpy", "float32", 2, 0)
    # two single runs cannot tell a 21% shift from run-to-run drift: it is not averaged
    (single,) = compare.compare_records(base, new)["groups"]
    assert (single["cases"], single["noisy"]) == (1, 1)
    assert group["geomean_ratio"] == pytest.approx(1.1)


def test_the_gate_text_escapes_case_ids_and_reasons():
    reason = "RuntimeError: *boom* | see <b>this</b> [link](http://x)\nsecond line"
    base = [record(impl="numpy"), record(impl="torch.naive", median=1 * MS)]
    new = [record(impl="numpy", status="error", reason=reason),
           record(impl="torch.naive", median=4.0 * MS, seed=1)]
    result = compare.compare_records(base, new)
    result["differences"] = [["cpu", "AMD | EPYC", "Intel_*Xeon*"]]
    result["forced"] = True
    text = gate.render_markdown(result)
    assert text.startswith("## :x: attnbench regression gate: FAIL: 1 regression, "
                           "1 new failure")
    failing = text.split("### Regressions and failures", 1)[1].split("###", 1)[0]
    rows = [line for line in failing.splitlines() if line.startswith("| `")]
    assert len(rows) == 2
    for line in rows:  # every row keeps its 8 cells: no pipe from the text splits one
        assert len([c for c in line.split(" | ")]) == 8
    error_row = next(line for line in rows if "numpy" in line)
    assert ("RuntimeError: \\*boom\\* \\| see &lt;b&gt;this&lt;/b&gt; \\[link\\](http://x) "
            "second line") in error_row
    assert "<b>" not in text and "\n" not in error_row
    assert "AMD \\| EPYC" in text and "Intel\\_\\*Xeon\\*" in text
    assert "ratio [95% CI]" in text and "the 95% bootstrap interval" in text
    # the console is plain text: the reason as it was
    lines = gate.console_lines(result)
    assert lines[0].startswith("FAIL: 1 regression, 1 new failure")
    assert any(reason.split("\n")[0] in line and "new failure" in line for line in lines)
    assert any("regression: torch.naive" in line and " -> 4 ms, ratio 4" in line
               for line in lines)
    assert gate.ratio_text({"ratio": None}) == "-"
    assert gate.LABELS["new_failure"] == "new failure"


# ---- run directories, fingerprints and the command -----------------------------------------

def write_run(path, records, **env_changes):
    path.mkdir(parents=True)
    (path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    env = capture_env(2, "synthetic", [])
    env.update(env_changes)
    if "packages" in env_changes:
        env["fingerprint"] = fingerprint(env)
    (path / "env.json").write_text(json.dumps(env))
    return path


def test_fingerprint_holds_the_fields_that_decide_comparability():
    env = {"cpu": "AMD EPYC", "python": "3.11.7", "threads": 2, "gpus": [
        {"name": "NVIDIA H100", "driver": "550.54", "memory": "80 GiB"}],
           "platform": "Linux-6.1-x86_64-with-glibc2.36",
           "packages": {"torch": "2.5.0", "numpy": "2.1", "scipy": "1.14"}}
    fp = fingerprint(env)
    assert fp == {"cpu": "AMD EPYC", "gpus": "NVIDIA H100 (driver 550.54)", "python": "3.11",
                  "machine": "x86_64", "threads": 2, "torch": "2.5.0", "tensorflow": None,
                  "keras": None, "xformers": None, "numpy": "2.1"}
    assert capture_env(2, "x", [])["fingerprint"]["python"].count(".") == 1


def test_runs_with_different_fingerprints_are_refused_without_force(tmp_path, capsys):
    base = write_run(tmp_path / "base", [record()])
    other = dict(capture_env(2, "x", [])["packages"], torch="9.9.9")
    new = write_run(tmp_path / "new", [record(seed=1)], packages=other, threads=3)
    assert main(["compare", str(base), str(new)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "not comparable" in err and "torch" in err and "9.9.9" in err and "threads" in err
    assert main(["compare", str(base), str(new), "--force", "--md", str(tmp_path / "c.md")]) == 0
    assert "Runs differ (compared with --force)" in (tmp_path / "c.md").read_text()


def test_compare_command_writes_markdown_and_json_and_exits_1_on_a_regression(tmp_path, capsys):
    base = write_run(tmp_path / "base", [record(impl="numpy"), record(impl="torch.naive")])
    new = write_run(tmp_path / "new", [record(impl="numpy", median=4.0 * MS, seed=1),
                                       record(impl="torch.naive", seed=1)])
    md, js = tmp_path / "c.md", tmp_path / "c.json"
    assert main(["compare", str(base), str(new), "--threshold", "5%", "--md", str(md),
                 "--json", str(js)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAIL: 1 regression") and "numpy/kernel/fwd" in out
    assert "judged: 2 as single runs (a host-timer change must exceed 3x" in out
    text = md.read_text()
    assert text.startswith("## :x: attnbench regression gate: FAIL: 1 regression")
    assert text.index("### Regressions") < text.index("<details>") < text.index("</details>")
    data = json.loads(js.read_text())
    assert data["verdict"] == "fail" and data["counts"]["regression"] == 1
    assert {c["verdict"] for c in data["cases"]} == {"regression", "unchanged"}
    # interleaved sides (attnbench ab) are judged by the threshold alone
    rows = compare.compare_records(load_records(base), load_records(new), interleaved=True)
    assert rows["counts"]["regression"] == 1 and rows["rules"]["interleaved"] == 2


@pytest.mark.parametrize("args, message", [
    (["compare", "/nonexistent/run", "/nonexistent/other"], "not a run directory"),
    (["compare", "only-one"], "expected BASE_RUN NEW_RUN"),
    (["compare", "a", "b", "--threshold", "150%"], "expected a fraction"),
    (["compare", "--baseline", "nope", "x"], "no baseline 'nope'"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_baseline_save_and_compare_with_it(tmp_path, capsys):
    store = tmp_path / "baselines"
    run = write_run(tmp_path / "run", [record(), record(impl="torch.naive")])
    new = write_run(tmp_path / "new", [record(seed=1), record(impl="torch.naive",
                                                              status="mismatch", seed=1)])
    assert main(["baseline", "save", str(run), "ci-cpu", "--baselines-dir", str(store)]) == 0
    assert (store / "ci-cpu" / "results.jsonl").is_file()
    assert json.loads((store / "ci-cpu" / "baseline.json").read_text())["ok"] == 2
    assert main(["baseline", "save", str(run), "ci-cpu", "--baselines-dir", str(store)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["baseline", "save", str(run), "ci-cpu", "--baselines-dir", str(store),
                 "--force"]) == 0
    assert main(["baseline", "list", "--baselines-dir", str(store)]) == 0
    assert "ci-cpu: 2 ok of 2 cases" in capsys.readouterr().out
    assert main(["compare", "--baseline", "ci-cpu", "--baselines-dir", str(store),
                 str(new)]) == 1
    assert "new failure: torch.naive" in capsys.readouterr().out
    assert baselines.names(store) == ["ci-cpu"]
    with pytest.raises(baselines.BaselineError):
        baselines.save(run, "../escape", store)


# ---- the CI assets the gate runs with ---------------------------------------------------------

def test_ci_suite_is_a_small_cuda_sweep():
    from harness import registry
    from harness.spec import load_suite

    cases = load_suite("ci", set(registry.adapters())).cases()
    assert {c.device for c in cases} == {"cuda"}
    assert {c.dtype for c in cases} == {"float16", "bfloat16"}
    assert {c.seq_len for c in cases} == {1024, 2048, 4096, 8192}
    assert {c.causal for c in cases} == {False, True}
    assert {"torch.naive", "torch.sdpa", "torch.sdpa.flash", "torch.sdpa.efficient",
            "torch.sdpa.cudnn", "xformers"} <= {c.impl for c in cases}


def test_the_gate_reads_the_plan_and_says_when_the_new_run_is_incomplete(tmp_path, capsys):
    from harness.spec import TimingSettings
    from harness.store import Plan, write_plan

    cases = [Case(impl=impl, seq_len=64) for impl in ("numpy", "torch.naive", "torch.sdpa")]
    base = write_run(tmp_path / "base", [record(impl=c.impl) for c in cases])
    new = write_run(tmp_path / "new", [record(impl="numpy", seed=1)])  # interrupted
    for run in (base, new):
        write_plan(run, Plan(suite="synthetic", suite_path=None, filters={}, overrides={},
                             timing=TimingSettings(), cases=tuple(cases)))
    md = tmp_path / "c.md"
    # nothing regressed among the cases it has, but the gate could not judge two it was meant to
    assert main(["compare", str(base), str(new), "--md", str(md)]) == 1
    out = capsys.readouterr().out
    assert "FAIL: the new run is incomplete (2 planned cases without a record)" in out
    assert "the new run is incomplete: 2 planned cases have no record" in out
    assert "torch.naive/kernel" in out and "base run is incomplete" not in out
    assert "the new run is incomplete" in md.read_text()
    result = compare.compare_runs(base, new)
    assert result["unrecorded"] == {"base": [], "new": [c.case_id for c in cases[1:]]}
    assert result["verdict"] == "fail" and compare.exit_code(result) == 1
    # an incomplete base only means fewer cases to compare: the gate still passes
    assert main(["compare", str(new), str(base)]) == 0
    assert "the base run is incomplete" in capsys.readouterr().out



def test_unchanged_is_claimed_only_when_the_interval_lies_within_the_threshold():
    """Whatever the timer's floor, `unchanged` says the ratio's interval is within ±threshold."""
    rng = np.random.default_rng(11)
    for scale in (5e-6, 30e-6, 1 * MS):
        for factor in (1.0, 1.03, 1.3, 2.5):
            judged = judge.judge_samples(samples(rng, scale, 0.01), samples(rng, scale * factor,
                                                                           0.01))
            if judged["verdict"] == "unchanged":
                assert 1 / 1.05 <= judged["ci_low"] and judged["ci_high"] <= 1.05, judged
            if factor >= 1.3:
                assert judged["verdict"] != "unchanged", (scale, factor, judged)


def test_a_run_recorded_before_jax_and_the_blas_still_compares_with_a_new_one():
    old = {"python": "3.11.9", "platform": "Linux-6.1-x86_64", "cpu": "AMD EPYC", "threads": 2,
           "packages": {"torch": "2.13.0", "numpy": "2.4.6"}}
    new = {**old, "packages": {**old["packages"], "jax": "0.10.2", "jaxlib": "0.10.2"},
           "blas": {"numpy": "openblas 0.3.31 (pthreads)", "torch": "mkl"}}
    assert compare.fingerprint_differences(old, new) == []
    upgraded = {**new, "packages": {**new["packages"], "jax": "0.11.0"}}
    assert [d[0] for d in compare.fingerprint_differences(new, upgraded)] == ["jax"]
