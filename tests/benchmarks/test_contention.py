"""Do figures stay true on a busy machine? A fixed subset measured quietly, then again with one
busy process per core beside it; per case the quiet and loaded medians, their ratio, and whether
the loaded figure was called stable.

Run: python -m pytest tests/benchmarks/test_contention.py -m bench -s
Passes when every loaded figure more than MAX_SHIFT away from its quiet figure is
`stable: false` (the harness noticed), and at least MIN_QUIET_STABLE of the quiet figures are
`stable: true` (it does not cry wolf). Nothing else may run on the machine meanwhile.
"""
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.store import load_records

pytestmark = [pytest.mark.bench, pytest.mark.timeout(7200)]  # long: runs whole suites
ROOT = Path(__file__).resolve().parents[2]
MAX_SHIFT = 0.25
MIN_QUIET_STABLE = 0.80
SUITE = """
name = "contention"
[sweep]
impls = ["numpy", "torch.naive", "torch.sdpa"]
dtype = ["float32"]
batch = 1
heads = 8
seq_len = [128, 256, 512, 1024]
head_dim = 64
causal = [false]
[timing]
warmup_s = 0.05
budget_s = 0.4
max_samples = 200
"""


def run(suite: Path, out: Path) -> dict:
    done = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(suite), "--out",
                           str(out), "--quiet", "--no-report"], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return {r["case_id"]: r for r in load_records(out) if r["status"] == "ok"}


def spin():
    while True:
        pass


def test_loaded_figures_that_moved_are_called_unstable(tmp_path):
    base = Path(os.environ.get("ATTNBENCH_BENCH_DIR") or tmp_path)
    suite = base / "contention.toml"
    suite.parent.mkdir(parents=True, exist_ok=True)
    suite.write_text(SUITE)
    quiet = run(suite, base / "quiet")
    ctx = multiprocessing.get_context("spawn")
    busy = [ctx.Process(target=spin, daemon=True) for _ in range(os.cpu_count() or 1)]
    for p in busy:
        p.start()
    try:
        time.sleep(1)
        loaded = run(suite, base / "loaded")
    finally:
        for p in busy:
            p.kill()
            p.join()
    print(f"\n{'case':<58} {'quiet':>10} {'loaded':>10} {'ratio':>6}  quiet stable  loaded stable")
    missed = []
    for case_id, q in quiet.items():
        lo = loaded[case_id]
        ratio = lo["median_s"] / q["median_s"]
        print(f"{case_id:<58} {q['median_s'] * 1e3:9.3f}m {lo['median_s'] * 1e3:9.3f}m "
              f"{ratio:6.2f}  {q['stable']!s:<12}  {lo['stable']!s}")
        if abs(ratio - 1) > MAX_SHIFT and lo["stable"] is not False:
            missed.append(case_id)
    quiet_stable = sum(q["stable"] is True for q in quiet.values()) / len(quiet)
    moved = sum(abs(loaded[i]["median_s"] / q["median_s"] - 1) > MAX_SHIFT
                for i, q in quiet.items())
    print(f"loaded figures more than {MAX_SHIFT:.0%} off: {moved} of {len(quiet)}, of which "
          f"called stable: {len(missed)}; quiet figures stable: {quiet_stable:.0%}")
    assert not missed, f"moved by more than {MAX_SHIFT:.0%} but called stable: {missed}"
    assert quiet_stable >= MIN_QUIET_STABLE


MAX_QUIET_FLAGGED = 0.02


def run_suite(args: list[str], out: Path) -> list[dict]:
    """The ok records of a run of `args` into `out`, reusing a run a previous invocation (or
    a console run for the README's sample) left complete there."""
    if (out / "scaling.json").exists():
        return [r for r in load_records(out) if r["status"] == "ok"]
    done = subprocess.run([sys.executable, "-m", "harness.cli", "run", *args, "--out", str(out),
                           "--quiet", "--no-report"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode in (0, 1), done.stdout + done.stderr
    return [r for r in load_records(out) if r["status"] == "ok"]


def test_a_quiet_default_run_flags_almost_nothing(tmp_path):
    """The default suite on a quiet machine: at most MAX_QUIET_FLAGGED of its figures flagged
    (re-measured ones count once, by their final figure), and none blamed on other programs
    when the worker's own threads were the ones waiting."""
    base = Path(os.environ.get("ATTNBENCH_BENCH_DIR") or tmp_path)
    records = run_suite(["default"], base / "quiet-default")
    flagged = [r for r in records if r["stable"] is False]
    first_pass = sum(1 for r in records if r.get("remeasured"))
    own = [r for r in records if (r.get("contention") or {}).get("oversubscribed")]
    print(f"\nquiet default run: {len(flagged)} of {len(records)} figures flagged "
          f"({len(flagged) / len(records):.1%}), {first_pass} re-measured, {len(own)} named "
          "oversubscribed (stable)")
    for r in flagged:
        print(f"  flagged {r['case_id']}: {r['instability']}")
    for r in own:
        print(f"  oversubscribed {r['case_id']}: {r['contention']['oversubscribed']}")
    assert len(flagged) <= MAX_QUIET_FLAGGED * len(records)


def test_an_implementation_with_more_threads_than_cores_is_named_for_it(tmp_path):
    """Every torch case given four times as many threads as cores, on a quiet machine: the
    waiting is its own, so the figures are named oversubscribed, not blamed on other programs."""
    base = Path(os.environ.get("ATTNBENCH_BENCH_DIR") or tmp_path)
    suite = base / "contention.toml"
    suite.parent.mkdir(parents=True, exist_ok=True)
    suite.write_text(SUITE)
    threads = 4 * (os.cpu_count() or 1)
    records = run_suite([str(suite), "--impl", "torch.naive,torch.sdpa", "--threads",
                         str(threads)], base / "oversubscribed")
    own = [r for r in records if (r.get("contention") or {}).get("oversubscribed")]
    blamed = [r for r in records if "other programs competed" in (r.get("instability") or "")]
    print(f"\n{threads} threads on {os.cpu_count()} cores: {len(own)} of {len(records)} named "
          f"oversubscribed, {len(blamed)} blamed on other programs")
    for r in own[:5]:
        print(f"  {r['case_id']}: {r['contention']['oversubscribed']}")
    assert own and not blamed
