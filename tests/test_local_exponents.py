"""Local exponents, the one-power-law test and significant crossovers, on synthetic sweeps whose
truth is known: a power law is reported with its exponent, a cache cliff is not a power law and
its local exponents show the step, implementations within noise never cross, and a real crossing
is found within one grid step."""
import math

import numpy as np
import pytest

from harness.analysis.scaling import (MAX_HALF_WIDTH, NO_POWER_LAW, POWER_LAW_ALPHA, crossovers,
                                      fits, format_fits, format_local, local_rows)

NS = [128, 256, 512, 1024, 2048]


def rec(impl, n, value, log_ci=0.03, **case):
    """An ok record whose median has the 95% interval value·exp(±log_ci)."""
    base = dict(impl=impl, level="kernel", mode="fwd", device="cpu", dtype="float32", batch=1,
                heads=8, seq_len=n, seq_len_kv=n, head_dim=64, causal=False, status="ok",
                median_s=value, ci_low_s=value * math.exp(-log_ci),
                ci_high_s=value * math.exp(log_ci), peak_mem_bytes=None)
    base.update(case)
    return base


def measured(impl, truth, rng, log_ci=0.03, ns=NS):
    """Medians scattered as their intervals say: log-normal, sd = log_ci / 1.96."""
    return [rec(impl, n, truth(n) * math.exp(rng.normal(0, log_ci / 1.96)), log_ci)
            for n in ns]


def row(rows, impl, metric="time"):
    (hit,) = [r for r in rows if r["impl"] == impl and r["metric"] == metric]
    return hit


def test_a_true_power_law_is_reported_with_its_exponent():
    rng = np.random.default_rng(7)
    r = row(fits(measured("a", lambda n: 2e-9 * n ** 1.8, rng)), "a")
    assert r["power_law"] is True and r["note"] == ""
    assert r["ci_low"] <= 1.8 <= r["ci_high"]
    assert (r["ci_high"] - r["ci_low"]) / 2 <= MAX_HALF_WIDTH
    assert r["test"]["p"] >= POWER_LAW_ALPHA and r["test"]["dof"] == 2
    assert [s["from_n"] for s in r["local"]] == NS[:-1]
    assert all(s["ci_low"] <= 1.8 + 0.3 and s["ci_high"] >= 1.8 - 0.3 for s in r["local"])


def test_the_power_law_test_rejects_a_true_power_law_about_as_often_as_its_alpha():
    rng = np.random.default_rng(20261124)
    trials = 300
    rejected = sum(row(fits(measured("a", lambda n: 1e-9 * n ** 2, rng)), "a")["power_law"]
                   is False for _ in range(trials))
    assert rejected <= 4 * POWER_LAW_ALPHA * trials  # 1% expected; 4% bounds the chance


def test_a_cache_cliff_is_no_single_power_law_and_its_local_exponents_show_the_step():
    # quadratic everywhere, but 3x slower from N=1024 on: the scores left the cache
    def cliff(n):
        return 1e-9 * n ** 2 * (3.0 if n >= 1024 else 1.0)

    rng = np.random.default_rng(3)
    r = row(fits(measured("naive", cliff, rng)), "naive")
    assert r["power_law"] is False and r["exponent"] is None and r["ci_low"] is None
    assert r["note"].startswith("no single power law over N=256..2048")
    step = 2 + math.log2(3)  # 3.58 across the cliff
    local = {(s["from_n"], s["to_n"]): s for s in r["local"]}
    for span, truth in {(128, 256): 2, (256, 512): 2, (512, 1024): step, (1024, 2048): 2}.items():
        s = local[span]
        assert abs(s["exponent"] - truth) < 0.15, (span, s)  # 95% intervals are ±0.06 here
        other = 2 if truth == step else step
        assert not s["ci_low"] <= other <= s["ci_high"], (span, s)  # the step is told apart
    header, body = format_fits(fits(measured("naive", cliff, rng)))
    assert body[0][header.index("time k")] == NO_POWER_LAW
    header, body = format_local([r])
    assert header[-4:] == ["N 128→256", "N 256→512", "N 512→1024", "N 1024→2048"]
    assert body[0][-2].startswith(f"{local[(512, 1024)]['exponent']:.2f} ±")


def test_an_exponent_known_only_loosely_is_not_reported_as_one():
    # consistent with one line within wide (±40%) intervals, but the fit's interval is wider
    # than ±0.5: the data do not pin an exponent
    rng = np.random.default_rng(11)
    r = row(fits(measured("a", lambda n: 1e-9 * n ** 2, rng, log_ci=0.4, ns=[512, 1024, 2048])),
            "a")
    assert r["test"]["p"] >= POWER_LAW_ALPHA  # consistent with a line...
    assert r["power_law"] is False and "known only to ±" in r["note"]  # ...but not pinned
    assert r["exponent"] is None


def test_memory_gets_local_exponents_too_and_scaling_json_rows_are_flat():
    recs = [rec("a", n, 1e-3, peak_mem_bytes=8 * n * n) for n in NS]
    rows = fits(recs)
    mem = row(rows, "a", "memory")
    assert mem["power_law"] is True and mem["exponent"] == pytest.approx(2.0)
    assert [s["exponent"] for s in mem["local"]] == pytest.approx([2.0] * 4)
    flat = local_rows(rows)
    assert {(f["metric"], f["from_n"], f["to_n"]) for f in flat} == {
        (m, a, b) for m in ("time", "memory") for a, b in zip(NS, NS[1:])}


# ---- crossovers -------------------------------------------------------------------------

def test_two_implementations_within_noise_never_cross():
    for seed in range(30):
        rng = np.random.default_rng(seed)
        recs = (measured("a", lambda n: 1e-9 * n ** 2, rng)
                + measured("b", lambda n: 1.01e-9 * n ** 2, rng))
        assert crossovers(recs) == [], seed


@pytest.mark.parametrize("true_cross", [300, 700, 1500])
def test_a_real_crossing_is_found_within_one_grid_step(true_cross):
    rng = np.random.default_rng(true_cross)
    recs = (measured("quadratic", lambda n: 1e-9 * n ** 2, rng)
            + measured("linear", lambda n: 1e-9 * true_cross * n, rng))
    (c,) = crossovers(recs)
    assert (c["faster_below"], c["faster_above"]) == ("quadratic", "linear")
    low, high = c["between"]
    assert low < true_cross < high  # the significant orders bracket the truth
    assert abs(math.log2(c["seq_len"] / true_cross)) <= 1  # within one grid step (2x)
    assert c["ratio_below"] > 1 and c["ratio_above"] > 1


def test_a_crossing_through_a_tie_needs_significant_orders_on_both_sides():
    rows = {128: (1.0, 2.0), 256: (1.0, 1.01), 512: (1.0, 0.5)}  # a ahead, tie, b ahead
    recs = [rec(impl, n, v, log_ci=0.02) for n, pair in rows.items()
            for impl, v in zip("ab", pair)]
    (c,) = crossovers(recs)
    assert tuple(c["between"]) == (128, 512) and c["faster_above"] == "b"
    one_side = {128: (1.0, 2.0), 256: (1.0, 1.01), 512: (1.0, 0.99)}  # never ahead after
    recs = [rec(impl, n, v, log_ci=0.02) for n, pair in one_side.items()
            for impl, v in zip("ab", pair)]
    assert crossovers(recs) == []
