"""Does the regression gate cry wolf, and does it see a real slowdown? Separate runs of the same
code on the same machine (A/A) must give no regression verdict, and the ratio's 95% interval must
contain 1.0 for at least MIN_COVERAGE of the cases; a head slowed by the test plugin
(tests/plugins/slow.py, one implementation, +10%, +20%, +30%) must be seen in that
implementation's cases and nowhere else: by interleaved A/B with MIN_POWER (+20% on the
µs-scale smoke shapes, +10% on ms-scale ci-cpu shapes); through `compare` of two runs with
repeats, as often as the machine's run-to-run noise allows (printed, with the smallest
detectable slowdowns the gate reported).

Run: python -m pytest tests/benchmarks/test_gate_noise.py -m bench -s
ATTNBENCH_AA_RUNS (default 11) runs of each suite, compared as consecutive pairs (run i against
run i + 1: 10 comparisons from 11 runs); ATTNBENCH_BENCH_DIR keeps the run directories. About
30 minutes for ci-cpu, 10 for smoke, 20 for the power checks on a 2-core machine; nothing else
may run meanwhile.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.analysis import judge
from harness.analysis.compare import compare_runs, judge_case
from harness.report.gate import detectable_text
from harness.store import load_records

pytestmark = [pytest.mark.bench, pytest.mark.timeout(7200)]  # long: runs whole suites
ROOT = Path(__file__).resolve().parents[2]
RUNS = int(os.environ.get("ATTNBENCH_AA_RUNS", "11"))
MIN_COVERAGE = 0.90
MIN_POWER = 0.90  # interleaved A/B: +20% on µs-scale cases, +10% on ms-scale ones
SLOWED = "torch.naive"
AB_FILTER = ["--impl", "numpy,torch.naive,torch.sdpa", "--dtype", "float32"]


def attnbench(*args, env=None):
    done = subprocess.run([sys.executable, "-m", "harness.cli", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, **(env or {})})
    assert done.returncode in (0, 1), done.stdout + done.stderr
    return done


def workdir(tmp_path) -> Path:
    return Path(os.environ.get("ATTNBENCH_BENCH_DIR") or tmp_path)


def runs_of(suite: str, base: Path) -> list[Path]:
    """RUNS run directories of `suite`, reusing those a previous invocation left complete."""
    dirs = []
    for i in range(RUNS):
        out = base / f"{suite}-{i}"
        if not (out / "scaling.json").exists():
            attnbench("run", suite, "--out", out, "--quiet", "--no-report")
        dirs.append(out)
    return dirs


def timed_rows(result: dict) -> list[dict]:
    return [r for r in result["cases"] if r.get("ratio") is not None]


def covered(rows) -> float:
    return sum(r["ci_low"] <= 1.0 <= r["ci_high"] for r in rows) / max(len(rows), 1)


def aa(suite: str, tmp_path) -> tuple[int, float, int]:
    dirs = runs_of(suite, workdir(tmp_path))
    regressions, rows = 0, []
    for a, b in zip(dirs, dirs[1:]):
        result = compare_runs(a, b)
        regressions += result["counts"]["regression"]
        rows += timed_rows(result)
        print(f"{a.name} vs {b.name}: {result['counts']['regression']} regressions, "
              f"{result['counts']['noisy']} noisy, rules {result['rules']}, coverage "
              f"{covered(timed_rows(result)):.0%}; {detectable_text(result)}")
    return regressions, covered(rows), len(rows)


def test_aa_smoke_runs_without_repeats_raise_no_regression(tmp_path):
    regressions, coverage, n = aa("smoke", tmp_path)
    print(f"smoke A/A: {RUNS - 1} comparisons, {n} case comparisons, {regressions} regressions, "
          f"interval covers 1.0 in {coverage:.0%} (single-run intervals ignore run-to-run "
          "variance; not required)")
    assert regressions == 0


def test_aa_ci_cpu_runs_with_repeats_raise_no_regression_and_cover_one(tmp_path):
    regressions, coverage, n = aa("ci-cpu", tmp_path)
    print(f"ci-cpu A/A: {RUNS - 1} comparisons, {n} case comparisons, {regressions} regressions, "
          f"interval covers 1.0 in {coverage:.0%}")
    assert regressions == 0
    assert coverage >= MIN_COVERAGE


def slowed(record: dict, factor: float) -> dict:
    """The record as if every call had taken `factor` times as long."""
    times = ("median_s", "ci_low_s", "ci_high_s", "min_s", "mean_s")
    return {**record, **{k: record[k] * factor for k in times if record.get(k) is not None},
            "samples_s": [v * factor for v in record["samples_s"]],
            "repeat_medians_s": [v * factor for v in record["repeat_medians_s"]]}


def pooled(records: list[dict]) -> dict:
    """One record of several runs' repeats of a case (R repeats each), as a run with their sum."""
    first = records[0]
    windows = [w for r in records for w in ((r.get("contention") or {}).get("per_repeat") or [])]
    return {**first, "repeat_medians_s": [m for r in records for m in r["repeat_medians_s"]],
            "repeat_n_samples": [n for r in records for n in r["repeat_n_samples"]],
            "samples_s": [v for r in records for v in r["samples_s"]],
            "contention": {**(first.get("contention") or {}), "per_repeat": windows},
            "stable": all(r.get("stable") is not False for r in records)}


def repeats_rule(dirs: list[Path], runs_per_side: int, alpha: float, factor: float = 1.3):
    """The repeats rule on disjoint groups of consecutive A/A runs (runs_per_side runs a side):
    (false regressions, comparisons, ms-scale cases the gate said could show `factor`, of those
    caught, ms-scale comparisons, of those caught) with the new side's times multiplied by
    `factor` for the power figures."""
    runs = [{r["case_id"]: r for r in load_records(d) if r["status"] == "ok"} for d in dirs]
    groups = [runs[i:i + runs_per_side] for i in range(0, len(runs), runs_per_side)]
    groups = [g for g in groups if len(g) == runs_per_side]
    false, compared, claimed, claimed_hit, ms, hit = 0, 0, 0, 0, 0, 0
    saved = judge.ALPHA
    judge.ALPHA = alpha
    try:
        for a, b in zip(groups, groups[1:]):
            for case_id in set.intersection(*(set(r) for r in a + b)):
                base = pooled([r[case_id] for r in a])
                new = pooled([r[case_id] for r in b])
                compared += 1
                false += judge_case(base, new)["verdict"] == "regression"
                if base["median_s"] < 1e-3 or base["stable"] is False or new["stable"] is False:
                    continue
                row = judge_case(base, slowed(new, factor))
                ms += 1
                hit += row["verdict"] == "regression"
                if row["min_detectable_ratio"] <= factor:
                    claimed += 1
                    claimed_hit += row["verdict"] == "regression"
    finally:
        judge.ALPHA = saved
    return false, compared, claimed, claimed_hit, ms, hit


def test_the_repeats_rule_is_calibrated_on_aa_runs(tmp_path):
    """α and the number of repeats, from the ci-cpu A/A runs: no false regression, and where the
    gate says a +30% slowdown was detectable it catches it (the slowdown applied to real repeat
    medians of separate runs, so it carries their run-to-run noise)."""
    dirs = runs_of("ci-cpu", workdir(tmp_path))
    chosen = None
    for runs_per_side in (1, 2):
        for alpha in (judge.ALPHA, 0.01):
            false, compared, claimed, claimed_hit, ms, hit = repeats_rule(dirs, runs_per_side, alpha)
            repeats = 3 * runs_per_side
            print(f"repeats rule, {repeats} repeats a side, alpha {alpha:g}: {false} false "
                  f"regressions of {compared}; +30% on ms-scale cases caught in {hit} of {ms}; "
                  f"the gate said +30% was detectable for {claimed}, of which {claimed_hit} "
                  "were caught")
            if runs_per_side == 1 and alpha == judge.ALPHA:
                chosen = (false, claimed, claimed_hit)
    false, claimed, claimed_hit = chosen
    assert false == 0
    assert claimed_hit >= judge.POWER * claimed - 1  # the power the gate states holds


def ab(out: Path, slowdown: float | None, suite: str = "ci-cpu") -> dict:
    head = []
    if slowdown:
        head = ["--head-env", "ATTNBENCH_PLUGINS=tests.plugins.slow", "--head-env",
                f"ATTNBENCH_TEST_SLOWDOWN={slowdown}", "--head-env",
                f"ATTNBENCH_TEST_SLOW_IMPL={SLOWED}"]
    if not (out / "compare.json").exists():
        attnbench("ab", suite, *AB_FILTER, *head, "--out", out, "--quiet")
    return json.loads((out / "compare.json").read_text())


def rates(result: dict) -> tuple[int, int, int]:
    """(slowed cases flagged, slowed cases, other cases flagged), with the smallest detectable
    slowdowns the gate reported for the slowed cases."""
    mine = [r for r in result["cases"] if r["impl"] == SLOWED and r.get("ratio") is not None]
    hit = sum(r["verdict"] == "regression" for r in mine)
    mdr = sorted(r["min_detectable_ratio"] for r in mine if r.get("min_detectable_ratio"))
    if mdr:
        print(f"  smallest detectable slowdowns reported for {SLOWED}: {mdr[0]:.3f}x .. "
              f"{mdr[-1]:.3f}x (median {mdr[len(mdr) // 2]:.3f}x); {detectable_text(result)}")
    others = sum(r["verdict"] in ("regression", "improvement") for r in result["cases"]
                 if r["impl"] != SLOWED)
    return hit, len(mine), others


def test_ab_of_identical_sides_covers_one(tmp_path):
    result = ab(workdir(tmp_path) / "ab-aa", None)
    rows = timed_rows(result)
    print(f"ab A/A: {len(rows)} cases, {result['counts']['regression']} regressions, interval "
          f"covers 1.0 in {covered(rows):.0%}")
    assert result["counts"]["regression"] == 0
    assert covered(rows) >= MIN_COVERAGE


def test_ab_sees_a_fifth_slower_microsecond_kernel(tmp_path):
    """The smoke shapes take 20-100 µs here: interleaved A/B must catch +20% on the slowed
    implementation with MIN_POWER and flag nothing else."""
    hit, n, others = rates(ab(workdir(tmp_path) / "ab-smoke-slow0.2", 0.2, suite="smoke"))
    print(f"ab smoke, {SLOWED} +20%: {hit} of {n} of its cases flagged, {others} other cases "
          "flagged")
    assert others == 0 and hit >= MIN_POWER * n


@pytest.mark.parametrize("slowdown", [0.1, 0.2, 0.3])
def test_power_of_ab_and_of_repeated_runs(tmp_path, slowdown):
    base_dir = workdir(tmp_path)
    hit, n, others = rates(ab(base_dir / f"ab-slow{slowdown}", slowdown))
    print(f"ab, {SLOWED} +{slowdown:.0%}: {hit} of {n} of its cases flagged, {others} other "
          "cases flagged")
    base = runs_of("ci-cpu", base_dir)[-1]
    new = base_dir / f"ci-cpu-slow{slowdown}"
    if not (new / "scaling.json").exists():
        attnbench("run", "ci-cpu", "--out", new, "--quiet", "--no-report",
                  env={"ATTNBENCH_PLUGINS": "tests.plugins.slow",
                       "ATTNBENCH_TEST_SLOWDOWN": str(slowdown),
                       "ATTNBENCH_TEST_SLOW_IMPL": SLOWED})
    rhit, rn, rothers = rates(compare_runs(base, new, force=True))
    print(f"ci-cpu with repeats + compare, {SLOWED} +{slowdown:.0%}: {rhit} of {rn} of its cases "
          f"flagged, {rothers} other cases flagged")
    assert others == 0 and rothers == 0
    assert hit >= MIN_POWER * n  # interleaved: ms-scale cases, +10% and more
