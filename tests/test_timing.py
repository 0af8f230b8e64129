"""The timer's statistics and stopping rule, on synthetic calls whose cost is known."""
import time

import numpy as np
import pytest

from harness.measure.timer import (Samples, Timer, adaptive_stop, ci_rel, enough, measure,
                                  median_ci)
from harness.spec import TimingSettings


def test_median_ci_contains_the_median_and_narrows_with_more_samples():
    rng = np.random.default_rng(1)
    small = rng.normal(1.0, 0.1, 20)
    large = rng.normal(1.0, 0.1, 2000)
    lo_s, hi_s = median_ci(small)
    lo_l, hi_l = median_ci(large)
    assert lo_s <= np.median(small) <= hi_s
    assert lo_l <= np.median(large) <= hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s) / 4
    assert lo_l < 1.0 < hi_l


def test_tiny_samples_fall_back_to_the_range():
    x = np.array([3.0, 1.0, 2.0])
    assert median_ci(x) == (1.0, 3.0)


def test_summarize_fields():
    stats = Samples((0.002, 0.001, 0.003, 0.004, 0.005, 0.006, 0.007), target_ci=0.02).to_record()
    assert stats["median_s"] == pytest.approx(0.004)
    assert stats["min_s"] == pytest.approx(0.001)
    assert stats["mean_s"] == pytest.approx(0.004)
    assert stats["iqr_s"] == pytest.approx(0.003)
    assert stats["n_samples"] == 7
    assert stats["ci_low_s"] <= stats["median_s"] <= stats["ci_high_s"]
    assert stats["converged"] is False  # that spread is far wider than ±2%


def test_sleep_is_measured_at_its_length():
    stats = measure(lambda: time.sleep(0.002), lambda: None,
                    TimingSettings(warmup_s=0.01, min_samples=5, budget_s=0.2)).to_record()
    assert 0.002 <= stats["median_s"] < 0.004
    assert stats["calls_per_sample"] == 1


def test_warm_up_is_excluded():
    calls = []

    def slow_first_calls():
        calls.append(1)
        time.sleep(0.02 if len(calls) <= 2 else 0.001)

    stats = measure(slow_first_calls, lambda: None,
                    TimingSettings(warmup_s=0.001, min_samples=5, budget_s=0.1)).to_record()
    assert stats["warmup_calls"] >= 2
    assert max(stats["samples_s"]) < 0.01


def test_sync_is_inside_the_timed_region():
    stats = measure(lambda: None, lambda: time.sleep(0.002),
                    TimingSettings(warmup_s=0.005, min_samples=5, budget_s=0.1)).to_record()
    assert stats["median_s"] >= 0.002


def test_fast_calls_are_timed_in_blocks():
    stats = measure(lambda: None, lambda: None,
                    TimingSettings(warmup_s=0.01, min_samples=5)).to_record()
    assert stats["calls_per_sample"] > 10
    assert stats["median_s"] < 2e-6


def test_sampling_stops_at_the_budget_when_noise_never_settles():
    rng = np.random.default_rng(0)
    settings = TimingSettings(warmup_s=0.001, min_samples=5, max_samples=100000, budget_s=0.15,
                              target_ci=1e-6, min_sample_s=1e-9)
    start = time.perf_counter()
    stats = measure(lambda: time.sleep(float(rng.uniform(0, 0.002))), lambda: None,
                    settings).to_record()
    elapsed = time.perf_counter() - start
    assert stats["converged"] is False
    assert elapsed < 1.0
    assert stats["n_samples"] >= 5


def test_sampling_stops_early_once_the_interval_is_tight():
    settings = TimingSettings(warmup_s=0.001, min_samples=10, max_samples=100000, budget_s=5.0,
                              target_ci=0.05)
    start = time.perf_counter()
    stats = measure(lambda: time.sleep(0.001), lambda: None, settings).to_record()
    assert stats["converged"] is True
    assert time.perf_counter() - start < 2.0


def test_the_checked_first_call_is_the_first_warm_up_call():
    calls = []
    timer = Timer(lambda: calls.append(1) or len(calls), lambda: None,
                  TimingSettings(warmup_s=0.0, min_samples=3, max_samples=3))
    assert timer.first_call() == 1  # its output comes back for the check
    stats = timer.measure().to_record()
    assert stats["warmup_calls"] == 2  # the first call counted: one more made the minimum
    assert len(calls) == 2 + 3 * stats["calls_per_sample"]


def test_blocks_are_sized_from_the_fastest_warm_up_call_not_a_slow_first_one():
    calls = []

    def cold_then_fast():
        calls.append(1)
        if len(calls) == 1:
            time.sleep(0.05)

    timer = Timer(cold_then_fast, lambda: None, TimingSettings(warmup_s=0.01, min_sample_s=1e-3))
    timer.first_call()
    assert timer.warm_up() > 10  # a 50 ms first call would have meant one call per sample


def test_take_returns_exactly_n_samples_and_counts_their_time():
    timer = Timer(lambda: time.sleep(0.001), lambda: None, TimingSettings())
    samples = timer.take(7)
    assert len(samples) == 7 and all(s >= 0.001 for s in samples)
    assert timer.timed_ns / 1e9 == pytest.approx(sum(samples), rel=1e-6)


def test_ci_rel_agrees_with_the_samples_object():
    x = tuple(np.random.default_rng(3).normal(1.0, 0.05, 200))
    assert ci_rel(x) == pytest.approx(Samples(x).ci_rel)


def test_timed_seconds_cover_warm_up_and_samples():
    stats = measure(lambda: time.sleep(0.002), lambda: None,
                    TimingSettings(warmup_s=0.01, min_samples=5, max_samples=5)).to_record()
    sampled = sum(stats["samples_s"]) * stats["calls_per_sample"]
    assert stats["timed_s"] >= sampled + 0.01


def test_median_ci_is_scipys_quantile_test_interval():
    from scipy.stats import quantile_test

    rng = np.random.default_rng(5)
    for n in [*range(6, 120), 500, 1000]:
        x = rng.lognormal(0, 0.3, n)
        ci = quantile_test(x, p=0.5).confidence_interval(0.95)
        assert median_ci(x) == (float(ci.low), float(ci.high)), n


def test_median_ci_ranks_are_the_binomial_quantiles_of_scipy_stats():
    from scipy.stats import binom

    from harness.measure.timer import median_ci_ranks

    for confidence in (0.95, 0.9, 0.99):
        tail = (1 - confidence) / 2
        for n in range(1, 3001):
            dist = binom(n, 0.5)
            expected = (int(dist.ppf(tail)) - 1, int(dist.isf(tail)))
            assert median_ci_ranks(n, confidence) == expected, (n, confidence)


def test_the_stop_rule_waits_for_min_samples_then_stops_at_the_interval_budget_or_max():
    settings = TimingSettings(min_samples=5, max_samples=40, budget_s=1.0, target_ci=0.05)
    steady = [1.0] * 10
    noisy = list(np.random.default_rng(0).uniform(1.0, 2.0, 20))
    assert not enough(steady[:4], 10.0, settings)  # under min_samples: not even a spent budget
    assert enough(steady[:5], 0.0, settings)  # the interval is within the target
    assert not enough(steady[:5], 0.0, settings, check_ci=False)  # (the run's loop between checks)
    assert not enough(noisy, 0.99, settings)  # wide, and budget left
    assert enough(noisy, 1.0, settings)  # the budget is spent
    assert enough(noisy * 2, 0.0, settings)  # max_samples taken
    assert enough([1.0] * 3, 0.0, TimingSettings(min_samples=5, max_samples=3))  # max comes first


def test_the_budget_counts_the_sampling_loops_wall_time_from_its_first_sample():
    """The loop hands the stop rule its own wall time; the budget is spent when that reaches
    it (an A/B side's blocks count the same way: their seconds summed)."""
    readings = iter(np.cumsum([0.0] + [1e-3, 2e-3, 1e-3, 8e-3] * 50) * 1e9)
    timer = Timer(lambda: None, lambda: None, TimingSettings(), clock=lambda: int(next(readings)))
    settings = TimingSettings(min_samples=2, max_samples=1000, budget_s=0.05, target_ci=1e-9)
    samples = timer.loop(adaptive_stop(settings))
    # samples end at 3, 12, 15, 24, ... 48, 51 ms after the loop began: the ninth spends 50 ms
    assert len(samples) == 9 and sorted(set(samples)) == pytest.approx([2e-3, 8e-3])
