"""Is the harness's clock honest? Two benchmarks that print their figures.

Run: python -m pytest tests/benchmarks -m bench -s

1. The harness's median for torch.sdpa (batch 1, 8 heads, seq_len 1024, head_dim 64, float32)
   against torch.utils.benchmark.Timer.blocked_autorange() on the same call, side by side in one
   process, alternating to share the machine's drift: they must agree within 5%.
2. The harness's median for a call that does nothing: its floor, at most 2 µs.
"""
import pytest
import torch
import torch.utils.benchmark as tb

from harness import registry
from harness.problem.truth import problem
from harness.spec import Case
from harness.measure.timer import measure
from harness.spec import TimingSettings

pytestmark = pytest.mark.bench

SETTINGS = TimingSettings(warmup_s=0.2, min_samples=20, max_samples=400, target_ci=0.01,
                          budget_s=3.0)


def test_harness_median_agrees_with_torch_benchmark_timer():
    case = Case(impl="torch.sdpa", batch=1, heads=8, seq_len=1024, head_dim=64, dtype="float32")
    inputs, _ = problem(case)
    prepared = registry.get("torch.sdpa").prepare(case, inputs)
    timer = tb.Timer(stmt="call()", globals={"call": prepared.call},
                     num_threads=torch.get_num_threads())
    ratios = []
    for round_ in range(3):
        ours = measure(prepared.call, prepared.sync, SETTINGS).median
        theirs = timer.blocked_autorange(min_run_time=2.0).median
        ratios.append(ours / theirs)
        print(f"round {round_}: harness median {ours * 1e3:.3f} ms, "
              f"torch.utils.benchmark median {theirs * 1e3:.3f} ms, ratio {ours / theirs:.4f}")
    prepared.close()
    typical = sorted(ratios)[1]  # the median of three rounds: one noisy round cannot decide
    print(f"agreement: {abs(typical - 1) * 100:.2f}% (median ratio of 3 rounds, "
          f"threads={torch.get_num_threads()})")
    assert abs(typical - 1) <= 0.05


def test_an_empty_call_costs_at_most_two_microseconds():
    stats = measure(lambda: None, lambda: None, SETTINGS).to_record()
    print(f"empty call: median {stats['median_s'] * 1e9:.1f} ns over {stats['n_samples']} samples "
          f"of {stats['calls_per_sample']} calls")
    assert stats["median_s"] <= 2e-6
