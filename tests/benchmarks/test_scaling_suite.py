"""The scaling suite's exponents on this machine, checked against what attention must show.

Run: python -m pytest tests/benchmarks -m bench -s -k scaling   (about 5 minutes on 2 cores)
It runs `attnbench run scaling`, prints the fitted exponents, and checks: memory of the naive
implementations grows as N^(2.0 ± 0.1), of torch's flash kernel at most N^1.2, and the time of
the naive implementations as N^k with 1.8 <= k <= 2.2.
"""
import subprocess
import sys
from pathlib import Path

import pytest

from harness.analysis.scaling import fits
from harness.store import load_records

pytestmark = pytest.mark.bench
ROOT = Path(__file__).resolve().parents[2]
NAIVE = ("numpy", "torch.naive", "tf.naive")


def test_scaling_suite_exponents(tmp_path):
    out = tmp_path / "scaling"
    result = subprocess.run([sys.executable, "-m", "harness.cli", "run", "scaling", "--out",
                             str(out), "--no-report"], cwd=ROOT, capture_output=True, text=True)
    print(result.stdout[-6000:])
    assert result.returncode == 0, result.stderr
    rows = {(r["impl"], r["metric"]): r for r in fits(load_records(out))}
    for (impl, metric), r in sorted(rows.items()):
        print(f"{impl:18} {metric:6} k = {r['exponent']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]")
    present = [impl for impl in NAIVE if (impl, "memory") in rows]
    assert "numpy" in present and "torch.naive" in present
    for impl in present:
        assert abs(rows[(impl, "memory")]["exponent"] - 2.0) <= 0.1
        assert 1.8 <= rows[(impl, "time")]["exponent"] <= 2.2
    assert rows[("torch.sdpa.flash", "memory")]["exponent"] <= 1.2
