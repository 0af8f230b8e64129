"""Scaling fits: known exponents come back with honest CIs, configurations stay apart, and
crossovers land where two power laws meet."""
import json
import math

import numpy as np
import pytest

from harness.analysis.scaling import (CROSSOVER_MARGIN, FIT_POINTS, Fit, crossovers, fit_exponent, fits, format_fits,
                             write_scaling)

NS = [256, 512, 1024, 2048, 4096, 8192]


def record(impl="a", seq_len=1024, median_s=1e-3, peak_mem_bytes=None, status="ok",
           log_ci=None, **case):
    """A record; `log_ci` gives its median a 95% interval of median·exp(±log_ci)."""
    base = dict(impl=impl, level="kernel", mode="fwd", device="cpu", dtype="float32", batch=1,
                heads=8, seq_len=seq_len, seq_len_kv=seq_len, head_dim=64, causal=False,
                status=status, median_s=median_s, peak_mem_bytes=peak_mem_bytes)
    if log_ci is not None and median_s:
        base.update(ci_low_s=median_s * math.exp(-log_ci), ci_high_s=median_s * math.exp(log_ci))
    base.update(case)
    return base


def sweep(fn, impl="a", ns=NS, **case):
    return [record(impl=impl, seq_len=n, median_s=fn(n), **case) for n in ns]


def noisy_power(exponent, rng, sigma=0.03, c=1e-9, ns=NS):
    ns = np.array(ns, dtype=float)
    return c * ns ** exponent * rng.lognormal(0.0, sigma, size=len(ns))


def only(rows, **match):
    hits = [r for r in rows if all(r[k] == v for k, v in match.items())]
    assert len(hits) == 1, hits
    return hits[0]


# ---- fit_exponent ------------------------------------------------------------------------

def test_noisy_quadratic_gives_a_narrow_ci_around_two():
    values = noisy_power(2.0, np.random.default_rng(1))
    fit = fit_exponent(NS, values)
    assert isinstance(fit, Fit)
    assert fit.ci_low <= 2.0 <= fit.ci_high
    assert fit.ci_high - fit.ci_low < 0.3
    assert fit.n_points == FIT_POINTS == 4
    assert fit.seq_lens == (1024, 2048, 4096, 8192)  # the top of the sweep


def test_noisy_linear_gives_about_one():
    fit = fit_exponent(NS, noisy_power(1.0, np.random.default_rng(2)))
    assert fit.ci_low <= 1.0 <= fit.ci_high
    assert abs(fit.exponent - 1.0) < 0.1


def test_noise_free_data_gives_the_exact_exponent_and_a_collapsed_ci():
    fit = fit_exponent(NS, [3e-10 * n ** 1.5 for n in NS])
    assert fit.exponent == pytest.approx(1.5, abs=1e-12)
    assert fit.ci_low == pytest.approx(fit.ci_high, abs=1e-9)
    assert math.exp(fit.intercept) == pytest.approx(3e-10, rel=1e-9)
    assert fit.r2 == pytest.approx(1.0)


def test_the_ci_uses_students_t_not_the_normal_quantile():
    values = noisy_power(2.0, np.random.default_rng(3))
    fit = fit_exponent(NS, values, points=3)  # one degree of freedom: t = 12.7, not 1.96
    from scipy import stats
    line = stats.linregress(np.log(NS[-3:]), np.log(values[-3:]))
    assert (fit.ci_high - fit.ci_low) / 2 == pytest.approx(12.7062 * line.stderr, rel=1e-4)


def test_fitting_the_top_of_the_sweep_sees_through_a_linear_term():
    curve = [1e-9 * n ** 2 + 2e-6 * n for n in NS]  # the linear term dominates below N=2000
    top = fit_exponent(NS, curve)
    everything = fit_exponent(NS, curve, points=len(NS))
    assert abs(top.exponent - 2.0) < abs(everything.exponent - 2.0)
    assert top.exponent > everything.exponent + 0.1


def test_two_points_give_no_fit_and_fewer_allowed_points_are_refused():
    assert fit_exponent([1024, 2048], [1.0, 4.0]) is None
    assert fit_exponent([1024], [1.0]) is None
    with pytest.raises(ValueError):
        fit_exponent(NS, [1.0] * len(NS), points=2)
    with pytest.raises(ValueError):
        fit_exponent([512, 512, 1024], [1.0, 1.1, 4.0])


def test_the_95_percent_ci_covers_the_true_exponent_about_95_percent_of_the_time():
    rng = np.random.default_rng(20261124)
    trials = 200
    covered = sum(
        (fit := fit_exponent(NS, noisy_power(2.0, rng))).ci_low <= 2.0 <= fit.ci_high
        for _ in range(trials))
    # 85% catches a normal quantile with 2 degrees of freedom (about 81%) or a biased slope;
    # the upper bound catches an interval made wide enough to always cover.
    assert 0.85 * trials <= covered <= 0.99 * trials


# ---- fits over records -------------------------------------------------------------------

def test_fits_report_time_and_memory_exponents_per_impl():
    rng = np.random.default_rng(4)
    times = dict(zip(NS, noisy_power(2.0, rng)))
    recs = [record(seq_len=n, median_s=times[n], peak_mem_bytes=4096 * n, log_ci=1.96 * 0.03)
            for n in NS]  # intervals as wide as the noise
    rows = fits(recs)
    assert [r["metric"] for r in rows] == ["time", "memory"]
    time, memory = rows
    assert time["ci_low"] <= 2.0 <= time["ci_high"] and time["note"] == ""
    assert memory["exponent"] == pytest.approx(1.0)
    assert time["seq_lens"] == [1024, 2048, 4096, 8192] and time["n_points"] == 4
    assert {"impl", "level", "mode", "device", "dtype", "batch", "heads", "head_dim", "causal",
            "metric", "exponent", "ci_low", "ci_high", "r2", "n_points", "seq_lens",
            "note"} <= set(time)


def test_failed_and_missing_values_are_ignored():
    recs = sweep(lambda n: 1e-9 * n ** 2)
    recs += [record(seq_len=16384, median_s=1e3, status="timeout"),
             record(seq_len=32768, median_s=1e3, status="mismatch"),
             record(seq_len=65536, median_s=None),
             record(seq_len=131072, median_s=float("nan")),
             record(seq_len=262144, median_s=0.0),
             record(seq_len=524288, median_s=None, status="unsupported")]
    (row,) = fits(recs)
    assert row["seq_lens"] == [1024, 2048, 4096, 8192]
    assert row["exponent"] == pytest.approx(2.0)


def test_repeated_measurements_of_one_seq_len_count_once_as_their_median():
    recs = sweep(lambda n: 1e-9 * n ** 2) + [record(seq_len=8192, median_s=1e-9 * 8192 ** 2,
                                                    seed=s) for s in (1, 2)]
    (row,) = fits(recs)
    assert row["n_points"] == 4 and row["exponent"] == pytest.approx(2.0)


def test_configurations_are_fitted_separately():
    recs = (sweep(lambda n: 1e-9 * n ** 2, causal=False)
            + sweep(lambda n: 1e-6 * n, causal=True)
            + sweep(lambda n: 1e-12 * n ** 3, dtype="bfloat16")
            + [record(seq_len=4, seq_len_kv=n, median_s=1e-3 * n ** 0.5) for n in NS])
    rows = fits(recs)
    assert len(rows) == 4
    assert only(rows, causal=False, dtype="float32", query_len=None)["exponent"] \
        == pytest.approx(2.0)
    assert only(rows, causal=True)["exponent"] == pytest.approx(1.0)
    assert only(rows, dtype="bfloat16")["exponent"] == pytest.approx(3.0)
    # a rectangular problem holds its queries fixed and is swept along the keys (decode)
    decode = only(rows, query_len=4)
    assert decode["exponent"] == pytest.approx(0.5) and decode["seq_lens"] == NS[-4:]


def test_every_case_field_splits_configurations():
    """A swept axis the fit rows did not name (norm, padding, ffn_mult) is its own series."""
    recs = (sweep(lambda n: 1e-9 * n ** 2, level="encoder", norm="post")
            + sweep(lambda n: 1e-6 * n, level="encoder", norm="pre")
            + sweep(lambda n: 1e-6 * n ** 1.5, padding=0.25))
    rows = fits(recs)
    assert len(rows) == 3
    assert only(rows, norm="post", level="encoder")["exponent"] == pytest.approx(2.0)
    assert only(rows, norm="pre")["exponent"] == pytest.approx(1.0)
    assert only(rows, padding=0.25)["exponent"] == pytest.approx(1.5)


def test_fewer_than_three_seq_lens_give_a_note_and_no_exponent():
    recs = sweep(lambda n: 1e-9 * n ** 2, ns=[1024, 2048])
    (row,) = fits(recs)
    assert row["exponent"] is None and row["ci_low"] is None and row["r2"] is None
    assert row["note"] == "only 2 seq_lens with a value"
    assert row["seq_lens"] == [1024, 2048]


def test_rows_are_sorted_by_configuration_then_metric_then_impl():
    recs = []
    for impl in ("z", "a"):
        for batch in (16, 2):
            recs += [record(impl=impl, seq_len=n, median_s=1e-9 * n ** 2, peak_mem_bytes=n,
                            batch=batch) for n in NS]
    order = [(r["batch"], r["metric"], r["impl"]) for r in fits(recs)]
    assert order == [(2, "time", "a"), (2, "time", "z"), (2, "memory", "a"), (2, "memory", "z"),
                     (16, "time", "a"), (16, "time", "z"), (16, "memory", "a"),
                     (16, "memory", "z")]


# ---- crossovers --------------------------------------------------------------------------

def test_a_quadratic_and_a_linear_impl_cross_near_one_thousand():
    recs = sweep(lambda n: 1e-6 * n ** 2, impl="A") + sweep(lambda n: 1e-3 * n, impl="B")
    (cross,) = crossovers(recs)
    assert cross["faster_below"] == "A" and cross["faster_above"] == "B"
    assert abs(cross["seq_len"] - 1000) <= 50
    # at 1024 the two are 2.4% apart, inside their ±2% intervals: a tie, not an order
    assert tuple(cross["between"]) == (512, 2048)
    assert cross["metric"] == "time" and cross["causal"] is False


def test_a_pair_that_never_flips_gives_nothing():
    recs = sweep(lambda n: 1e-9 * n ** 2, impl="A") + sweep(lambda n: 2e-9 * n ** 2, impl="B")
    assert crossovers(recs) == []


def test_ties_are_not_flips_but_a_flip_across_a_tie_is_one_crossover():
    same = {256: 1.0, 512: 2.0, 1024: 3.0}
    recs = ([record(impl="A", seq_len=n, median_s=v) for n, v in same.items()]
            + [record(impl="B", seq_len=n, median_s=v) for n, v in same.items()])
    assert crossovers(recs) == []
    a = {256: 1.0, 512: 2.0, 1024: 3.0}
    b = {256: 2.0, 512: 2.0, 1024: 1.0}
    recs = ([record(impl="A", seq_len=n, median_s=v) for n, v in a.items()]
            + [record(impl="B", seq_len=n, median_s=v) for n, v in b.items()])
    (cross,) = crossovers(recs)
    assert (cross["faster_below"], cross["faster_above"]) == ("A", "B")
    assert cross["seq_len"] == 512 and tuple(cross["between"]) == (256, 1024)


def test_impls_in_different_configurations_are_not_compared():
    recs = (sweep(lambda n: 1e-6 * n ** 2, impl="A", causal=True)
            + sweep(lambda n: 1e-3 * n, impl="B", causal=False))
    assert crossovers(recs) == []


def test_crossovers_of_memory_use_peak_memory():
    recs = ([record(impl="A", seq_len=n, peak_mem_bytes=n * n) for n in NS]
            + [record(impl="B", seq_len=n, peak_mem_bytes=3000 * n) for n in NS])
    (cross,) = crossovers(recs, metric="memory")
    assert cross["seq_len"] == 3000 and tuple(cross["between"]) == (2048, 4096)
    assert (cross["faster_below"], cross["faster_above"]) == ("A", "B")
    assert crossovers(recs, metric="time") == []  # same median_s everywhere: all ties


# ---- output ------------------------------------------------------------------------------

def test_write_scaling_writes_strict_json(tmp_path):
    recs = (sweep(lambda n: 1e-6 * n ** 2, impl="A") + sweep(lambda n: 1e-3 * n, impl="B")
            + sweep(lambda n: 1e-3, impl="C", ns=[256, 512])
            + [record(impl="D", seq_len=n, median_s=float("nan")) for n in NS])
    path = write_scaling(tmp_path, recs)
    assert path == tmp_path / "scaling.json"
    text = path.read_text()
    assert "NaN" not in text
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert data["fit_points"] == FIT_POINTS
    assert [r["impl"] for r in data["fits"]] == ["A", "B", "C"]
    assert data["fits"][2]["exponent"] is None
    # within CROSSOVER_MARGIN (10%) at 1024 counts as a tie; the crossing is placed where the
    # medians change order, within one grid step of the true 1000
    assert data["crossover_margin"] == CROSSOVER_MARGIN
    assert len(data["crossovers"]) == 1 and data["crossovers"][0]["between"] == [512, 2048]
    assert abs(data["crossovers"][0]["seq_len"] - 1000) <= 50
    assert {r["impl"] for r in data["local"]} == {"A", "B", "C"}
    with open(path) as fh:
        assert json.load(fh) == data


def test_format_fits_gives_a_printable_table():
    recs = (sweep(lambda n: 1e-9 * n ** 2, impl="torch.sdpa", causal=True)
            + sweep(lambda n: 1e-9 * n ** 2, impl="numpy", ns=[256, 512]))
    for r in recs:
        if r["impl"] == "torch.sdpa":
            r["peak_mem_bytes"] = 1000.0 * r["seq_len"]
    header, rows = format_fits(fits(recs))
    assert header == ["impl", "dtype", "mask", "time k", "95% CI", "memory k", "95% CI", "points"]
    assert ["numpy", "float32", "full", "-", "", "-", "", ""] in rows  # two seq_lens: no fit
    assert ["torch.sdpa", "float32", "causal", "2.00", "[2.00, 2.00]", "1.00", "[1.00, 1.00]",
            "1024..8192"] in rows
    assert all(isinstance(c, str) for row in rows for c in row)


def test_format_fits_shows_an_axis_only_when_it_varies():
    recs = sweep(lambda n: 1e-9 * n ** 2, batch=1) + sweep(lambda n: 1e-9 * n ** 2, batch=4)
    header, rows = format_fits(fits(recs))
    assert header[3] == "batch" and [r[3] for r in rows] == ["1", "4"]


def test_two_equal_kernels_trading_places_in_the_noise_do_not_cross():
    noise = {256: 1.02, 512: 0.98, 1024: 1.03, 2048: 0.97, 4096: 1.01, 8192: 0.99}
    recs = (sweep(lambda n: 1e-6 * n ** 2, impl="A")
            + sweep(lambda n: 1e-6 * n ** 2 * noise[n], impl="B"))
    assert crossovers(recs) == []  # every order is inside the points' ±2% intervals
    assert crossovers(recs, min_ratio=CROSSOVER_MARGIN) == []
    wide = {n: 1.06 if i % 2 else 1 / 1.06 for i, n in enumerate(NS)}  # 12% swings, ±2%
    recs = (sweep(lambda n: 1e-6 * n ** 2, impl="A")
            + sweep(lambda n: 1e-6 * n ** 2 * wide[n], impl="B"))
    assert len(crossovers(recs)) == len(NS) - 1  # intervals separate: each flip is an order
    assert crossovers(recs, min_ratio=CROSSOVER_MARGIN) == []  # but within the 10% margin
