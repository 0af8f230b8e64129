"""Ragged batches and score modifiers: the problem layer against computations written here from
the definitions (plain loops, hard-coded numbers, torch autograd in float64), never against the
harness's own reference.

The definition (harness.problem.modifiers): s = q·k/√D; s = c·tanh(s/c) (softcap c); s -=
slope_h·|pos_i − j| (ALiBi); s += bias[b or 0, h, i, j]; then keep key j of query i when j is a
real key of its sequence, and under a causal mask j <= pos_i, and with a window j > pos_i −
window; pos_i = i top-left, n − Nq + i bottom-right (n the sequence's real keys).
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.case import BOTTOM_RIGHT, CAUSAL_ALIGNS, TOP_LEFT
from harness.measure.flops import attention_flops, case_flops, padded_flops, score_entries
from harness.measure.traffic import case_bytes, forward_bytes
from harness.problem import check, observable, reference, truth
from harness.problem.gradients import kernel_forward_backward
from harness.problem.inputs import (case_keep, grad_output, kernel_inputs, key_valid_lengths,
                                    problem_seed, query_valid_lengths, sequence_lengths)
from harness.problem.modifiers import alibi_slopes
from harness.spec import Case

DISTRIBUTIONS = ["uniform", "longtail", "bimodal"]


def paper_slopes(n):
    """ALiBi's `get_slopes`, as the paper's code writes it."""
    def power_of_2(n):
        start = 2 ** (-2 ** -(math.log2(n) - 3))
        return [start * start ** i for i in range(n)]
    if math.log2(n).is_integer():
        return power_of_2(n)
    closest = 2 ** math.floor(math.log2(n))
    return power_of_2(closest) + paper_slopes(2 * closest)[0::2][: n - closest]


def mods_of(case, inputs):
    """The case's modifiers as plain values for the definitions below."""
    return dict(causal=case.causal, align=case.causal_align, keys=key_valid_lengths(case),
                window=case.window, cap=case.softcap, bias=inputs.get("bias"),
                slopes=np.array(paper_slopes(case.heads)) if case.alibi else None)


def last_key(i, nq, n, causal, align):
    """pos_i: the key position query i sits at (the alignment's offset counts real keys)."""
    return i + (n - nq if causal and align == BOTTOM_RIGHT else 0)


def by_definition(q, k, v, causal=False, align=TOP_LEFT, keys=None, window=0, cap=0.0,
                  bias=None, slopes=None):
    """The output, one (batch, head, query) at a time, in float64."""
    batch, heads, nq, d = q.shape
    kv_heads, nk = k.shape[1], k.shape[2]
    out = np.zeros((batch, heads, nq, v.shape[-1]))
    for b in range(batch):
        n = nk if keys is None else int(keys[b])
        for h in range(heads):
            g = h // (heads // kv_heads)
            for i in range(nq):
                pos = last_key(i, nq, n, causal, align)
                kept = [j for j in range(n) if (not causal or j <= pos)
                        and (not window or j > pos - window)]
                if not kept:
                    continue
                s = np.array([q[b, h, i] @ k[b, g, j] for j in kept]) / math.sqrt(d)
                if cap:
                    s = cap * np.tanh(s / cap)
                if slopes is not None:
                    s = s - slopes[h] * np.abs(pos - np.array(kept))
                if bias is not None:
                    s = s + bias[b if bias.shape[0] > 1 else 0, h, i, kept]
                p = np.exp(s - s.max())
                out[b, h, i] = p / p.sum() @ v[b, g, kept]
    return out


def by_autograd(inputs, causal=False, align=TOP_LEFT, keys=None, window=0, cap=0.0, bias=None,
                slopes=None):
    """Output and q, k, v gradients of the definition, vectorised in torch float64 and
    differentiated by autograd (K/V repeated over each group: their gradients sum over it)."""
    q, k, v = (torch.tensor(inputs[n], requires_grad=True) for n in "qkv")
    batch, heads, nq, d = q.shape
    nk = k.shape[2]
    keep = np.zeros((batch, 1, nq, nk), bool)
    dist = np.zeros((batch, 1, nq, nk))
    for b in range(batch):
        n = nk if keys is None else int(keys[b])
        for i in range(nq):
            pos = last_key(i, nq, n, causal, align)
            dist[b, 0, i] = np.abs(pos - np.arange(nk))
            for j in range(n):
                keep[b, 0, i, j] = (not causal or j <= pos) and (not window or j > pos - window)
    group = heads // k.shape[1]
    kk, vv = (x.repeat_interleave(group, dim=1) for x in (k, v))
    s = q @ kk.transpose(-1, -2) / math.sqrt(d)
    if cap:
        s = cap * torch.tanh(s / cap)
    if slopes is not None:
        s = s - torch.tensor(slopes)[:, None, None] * torch.tensor(dist)
    if bias is not None:
        s = s + torch.tensor(bias)
    keep = torch.tensor(keep)
    any_kept = keep.any(-1, keepdim=True)
    s = s.masked_fill(~keep, -math.inf).masked_fill(~any_kept, 0.0)
    out = (torch.softmax(s, -1) * any_kept) @ vv
    grads = torch.autograd.grad(out, (q, k, v), torch.tensor(inputs["dout"]))
    return out.detach().numpy(), dict(zip("qkv", (g.numpy() for g in grads)))


PROBLEMS = {  # Case fields of small problems, one per ragged batch, mask and modifier
    "pad-br": dict(seq_len=6, seq_len_kv=11, causal=True, causal_align=BOTTOM_RIGHT,
                   padding=0.6),
    **{f"len-{d}-prefill": dict(seq_len=13, causal=True, lengths=d) for d in DISTRIBUTIONS},
    **{f"len-{d}-decode": dict(seq_len=3, seq_len_kv=17, causal=True,
                               causal_align=BOTTOM_RIGHT, lengths=d) for d in DISTRIBUTIONS},
    "len-full": dict(seq_len=9, lengths="uniform"),
    "win-square": dict(seq_len=12, causal=True, window=4),
    "win-tl": dict(seq_len=7, seq_len_kv=15, causal=True, window=3),
    "win-br": dict(seq_len=7, seq_len_kv=15, causal=True, causal_align=BOTTOM_RIGHT, window=5),
    "win-br-len": dict(seq_len=4, seq_len_kv=15, causal=True, causal_align=BOTTOM_RIGHT,
                       window=3, lengths="bimodal"),
    "alibi-full": dict(seq_len=7, seq_len_kv=10, alibi=True),
    "alibi-causal-6heads": dict(seq_len=9, causal=True, alibi=True, heads=6, kv_heads=3),
    "alibi-br-12heads": dict(seq_len=4, seq_len_kv=11, causal=True, causal_align=BOTTOM_RIGHT,
                             alibi=True, heads=12, kv_heads=4, padding=0.5),
    "bias-head": dict(seq_len=8, seq_len_kv=10, bias="head"),
    "bias-batch-head": dict(seq_len=8, causal=True, bias="batch_head", lengths="longtail"),
    "softcap": dict(seq_len=8, seq_len_kv=12, softcap=5.0),
    "softcap-causal": dict(seq_len=10, causal=True, softcap=2.5, kv_heads=2),
    "everything": dict(seq_len=5, seq_len_kv=14, causal=True, causal_align=BOTTOM_RIGHT,
                       window=6, alibi=True, bias="batch_head", softcap=3.0, lengths="uniform",
                       kv_heads=2),
}


def problem_case(name, **kw):
    return Case(**{"impl": "numpy", "batch": 3, "heads": 4, "head_dim": 8, **PROBLEMS[name],
                   **kw})


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_forward_and_backward_equal_the_definition(monkeypatch, name):
    monkeypatch.setattr(reference, "ROW_CHUNK", 3)  # several chunks: rows of the bias, ALiBi
    case = problem_case(name, mode="fwd_bwd")
    inputs = kernel_inputs(case)
    inputs["dout"] = grad_output(case, inputs["q"].shape)
    out, grads = kernel_forward_backward(case, inputs)
    defined = mods_of(case, inputs)
    want = by_definition(inputs["q"], inputs["k"], inputs["v"], **defined)
    real = truth.real_rows(case)  # a document's padded query rows are undefined
    assert np.abs(real(out, "out") - real(want, "out")).max() < 1e-12
    want_out, want_grads = by_autograd(inputs, **defined)
    assert np.abs(real(want_out, "out") - real(want, "out")).max() < 1e-12
    for name in "qkv":
        scale = max(1.0, np.abs(want_grads[name]).max())
        assert np.isfinite(grads[name]).all()
        assert np.abs(grads[name] - want_grads[name]).max() < 1e-11 * scale, name


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_the_truth_is_the_definition_and_its_tolerance_the_naive_error(name):
    truth.clear_caches()
    case = problem_case(name, dtype="bfloat16")
    inputs, ref = truth.problem(case)
    want = by_definition(inputs["q"], inputs["k"], inputs["v"], **mods_of(case, inputs))
    real = truth.real_rows(case)
    assert np.abs(real(ref, "out") - real(want, "out")).max() < 1e-12
    naive = reference.kernel_attention(case, inputs, "bfloat16")
    err = np.abs(real(naive, "out") - real(ref, "out")).max()
    assert truth.tolerance_for(case) == pytest.approx(max(4 * err, 1e-2))
    truth.clear_caches()


# --- ALiBi's slopes --------------------------------------------------------------------------


def test_alibi_slopes_of_a_power_of_two_are_the_papers_geometric_sequence():
    assert alibi_slopes(8).tolist() == [2.0 ** -k for k in range(1, 9)]
    assert alibi_slopes(1).tolist() == [2.0 ** -8]
    assert np.allclose(alibi_slopes(16), [2.0 ** (-k / 2) for k in range(1, 17)], rtol=1e-15)


@pytest.mark.parametrize("heads", [1, 2, 3, 5, 6, 7, 8, 12, 20, 32, 40, 64, 96])
def test_alibi_slopes_follow_the_papers_interpolation(heads):
    assert alibi_slopes(heads).shape == (heads,)
    assert np.allclose(alibi_slopes(heads), paper_slopes(heads), rtol=1e-14, atol=0)


def test_six_heads_take_four_heads_slopes_then_every_other_of_eight():
    four, eight = [2.0 ** (-2 * k) for k in range(1, 5)], [2.0 ** -k for k in range(1, 9)]
    assert np.allclose(alibi_slopes(6), four + eight[0::2][:2], rtol=1e-15)


# --- lengths ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dist", DISTRIBUTIONS)
@pytest.mark.parametrize("batch, seq_len, seq_len_kv", [(1, 7, 7), (1, 1, 1), (4, 1, 1),
                                                        (5, 2, 2), (16, 1024, 1024),
                                                        (7, 3, 333), (64, 4096, 4096)])
def test_lengths_meet_the_token_budget_within_bounds_and_are_deterministic(dist, batch, seq_len,
                                                                           seq_len_kv):
    case = Case(impl="numpy", batch=batch, seq_len=seq_len, seq_len_kv=seq_len_kv, lengths=dist)
    n = seq_len_kv  # the ragged axis: the documents of a prefill, the KV caches of a decode
    lengths = sequence_lengths(case)
    assert lengths.dtype == np.int64 and lengths.shape == (batch,)
    assert lengths.min() >= 1 and lengths.max() <= n
    assert lengths.sum() == max(batch, round(batch * n / 2 + 0.1))  # half the tokens, half up
    assert np.array_equal(lengths, sequence_lengths(Case(impl="torch.sdpa", dtype="float16",
                                                         batch=batch, seq_len=seq_len,
                                                         seq_len_kv=seq_len_kv, lengths=dist)))
    assert np.array_equal(key_valid_lengths(case), lengths)
    queries = query_valid_lengths(case)
    assert np.array_equal(queries, lengths) if seq_len == seq_len_kv else queries is None


@pytest.mark.parametrize("dist", DISTRIBUTIONS)
def test_lengths_differ_between_seeds_and_have_their_distributions_shape(dist):
    draws = [sequence_lengths(Case(impl="numpy", batch=64, seq_len=1024, lengths=dist,
                                   seed=s)) / 1024 for s in range(20)]
    assert len({tuple(d) for d in draws}) == 20
    x = np.concatenate(draws)
    if dist == "uniform":
        assert 0.4 < np.median(x) < 0.6 and x.std() > 0.25
    if dist == "longtail":  # skewed: median below the mean, a tail clipped at N
        assert np.median(x) < 0.45 and (x == 1).mean() > 0.1 and (x < 0.25).mean() > 0.25
    if dist == "bimodal":  # two modes near N/8 and 7N/8, hardly anything between
        assert ((x > 0.3) & (x < 0.6)).mean() < 0.05
        assert 0.4 < (x < 0.3).mean() < 0.6


def test_constant_lengths_and_padding_keep_their_meaning():
    assert sequence_lengths(Case(impl="numpy", batch=2)) is None
    padded = Case(impl="numpy", batch=3, seq_len=10, padding=0.5)
    assert key_valid_lengths(padded).tolist() == [5, 7, 8] and query_valid_lengths(padded) is None


def test_padded_query_rows_of_a_document_get_no_upstream_gradient():
    case = Case(impl="numpy", batch=4, heads=2, seq_len=16, head_dim=8, lengths="longtail",
                mode="fwd_bwd")
    g = grad_output(case, (4, 2, 16, 8))
    for b, n in enumerate(query_valid_lengths(case)):
        assert not g[b, :, n:].any() and g[b, :, :n].all()
    decode = Case(impl="numpy", batch=2, seq_len=4, seq_len_kv=16, lengths="uniform")
    assert grad_output(decode, (2, 8, 4, 64)).all()  # every query of a decode step is real


def test_a_check_ignores_the_padded_query_rows_and_nothing_else():
    truth.clear_caches()
    case = Case(impl="numpy", batch=3, heads=2, seq_len=12, head_dim=8, causal=True,
                lengths="uniform", dtype="float64", mode="fwd_bwd")
    _, ref = truth.problem(case)
    grads = truth.reference_grads(case)
    rows = query_valid_lengths(case)
    out = ref.copy()
    out[0, :, rows[0]:] = np.nan  # undefined rows may hold anything
    dq = grads["q"].copy()
    dq[0, :, rows[0]:] = 1e6
    prepared = SimpleNamespace(to_numpy=np.asarray, out_dtype=lambda x: "float64",
                               grads_to_numpy=lambda g: {n: np.asarray(a) for n, a in g.items()})
    result = check.check_output(case, prepared, (out, {**grads, "q": dq}), ref,
                                truth.tolerance_for(case))
    assert result["status"] == "ok", result
    out[0, :, rows[0] - 1] += 1e-3  # a real row
    result = check.check_output(case, prepared, (out, grads), ref, truth.tolerance_for(case))
    assert result["status"] == "mismatch" and "max_abs_err" in result["reason"]
    truth.clear_caches()


# --- inputs ----------------------------------------------------------------------------------


def test_inputs_without_the_new_fields_are_the_numbers_drawn_before_they_existed():
    case = Case(impl="numpy", batch=2, heads=4, seq_len=16, seq_len_kv=24, head_dim=8, seed=5,
                causal=True, padding=0.25, lengths="constant", layout="padded", window=0,
                alibi=False, bias="none", softcap=0.0)
    old_key = ("kernel", 2, 4, 16, 24, 8, True, 5, "pad0.25")
    seed = zlib_seed(old_key, 5)
    assert problem_seed(case) == seed
    rng = np.random.default_rng(seed)
    old = {"q": rng.standard_normal((2, 4, 16, 8)), "k": rng.standard_normal((2, 4, 24, 8)),
           "v": rng.standard_normal((2, 4, 24, 8))}
    inputs = kernel_inputs(case)
    assert sorted(inputs) == ["k", "q", "v"]
    assert all(np.array_equal(inputs[n], old[n]) for n in "qkv")
    g = np.random.default_rng([seed, 0x6A09E667]).standard_normal((2, 4, 16, 8))
    assert np.array_equal(grad_output(case, (2, 4, 16, 8)), g)
    packed = Case(impl="numpy", batch=2, heads=4, seq_len=16, head_dim=8, lengths="uniform",
                  layout="packed")
    assert problem_seed(packed) == problem_seed(Case(impl="numpy", batch=2, heads=4, seq_len=16,
                                                     head_dim=8, lengths="uniform"))


def zlib_seed(key, seed):
    import zlib
    return zlib.crc32(repr(key).encode()) ^ (seed * 0x9E3779B1 % 2**32)


def test_a_bias_input_has_its_shape_and_a_softcap_scales_q_to_reach_the_cap():
    head = kernel_inputs(Case(impl="numpy", batch=3, heads=4, seq_len=5, seq_len_kv=7,
                              bias="head"))
    assert head["bias"].shape == (1, 4, 5, 7)
    per = kernel_inputs(Case(impl="numpy", batch=3, heads=4, seq_len=5, seq_len_kv=7,
                             bias="batch_head"))
    assert per["bias"].shape == (3, 4, 5, 7) and 0.5 < per["bias"].std() < 2
    capped = Case(impl="numpy", batch=2, heads=4, seq_len=64, head_dim=32, softcap=20.0)
    x = kernel_inputs(capped)
    s = np.einsum("bhqd,bhkd->bhqk", x["q"], x["k"]) / math.sqrt(32)
    assert 0.5 * 20 < s.std() < 2 * 20  # typical scores near the cap: tanh is non-linear there


# --- observability ----------------------------------------------------------------------------


def test_a_softcap_far_above_the_scores_is_unobservable():
    truth.clear_caches()
    case = Case(impl="numpy", batch=2, heads=4, seq_len=64, head_dim=32, softcap=1000.0)
    inputs = kernel_inputs(case)
    inputs["q"] = inputs["q"] / 1000.0  # scores of O(1) against a cap of 1000
    why = observable.unobservable(case, inputs)
    assert why is not None and why.startswith("softcap 1000 changes this problem's output by")
    assert "too small for the cap to act" in why
    effect = observable.modifier_effects(case, inputs)["softcap"]
    assert 0 < effect < observable.OBSERVABLE_MARGIN * 1e-5  # float32's tolerance is its floor
    assert observable.unobservable(case) is None  # its own inputs reach the cap
    truth.clear_caches()


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("mods", [dict(softcap=10.0), dict(alibi=True), dict(bias="head"),
                                  dict(bias="batch_head"), dict(causal=True, window=16),
                                  dict(causal=True, alibi=True, softcap=5.0, window=32)])
def test_the_default_inputs_make_each_modifier_observable(dtype, mods):
    truth.clear_caches()
    case = Case(impl="numpy", batch=2, heads=4, seq_len=128, head_dim=64, dtype=dtype, **mods)
    assert observable.unobservable(case) is None
    effects = observable.modifier_effects(case)
    assert set(effects) == {k for k in ("window", "alibi", "bias", "softcap") if k in mods}
    assert min(effects.values()) > observable.OBSERVABLE_MARGIN * truth.tolerance_for(case)
    truth.clear_caches()


def test_a_window_one_key_short_of_the_keys_is_observable_only_where_that_key_weighs():
    truth.clear_caches()
    # 8 keys: the last query's first key carries ~1/8 of its weight; float32 sees it
    tiny = Case(impl="numpy", batch=1, heads=2, seq_len=8, head_dim=16, causal=True, window=7)
    assert observable.unobservable(tiny) is None
    # 512 keys in bfloat16: dropping one key of the last row moves it by ~1/512, far under a
    # tolerance built from bfloat16 round-off
    long = Case(impl="numpy", batch=1, heads=2, seq_len=512, head_dim=16, causal=True,
                window=511, dtype="bfloat16")
    why = observable.unobservable(long)
    assert why is not None and why.startswith("window 511 changes")
    assert "too little attention weight" in why
    truth.clear_caches()


def test_a_cap_hidden_by_bfloat16_round_off_says_so():
    truth.clear_caches()
    case = Case(impl="numpy", batch=1, heads=2, seq_len=256, head_dim=16, causal=True,
                softcap=50.0, dtype="bfloat16")
    why = observable.unobservable(case)
    assert why is not None and "bfloat16 round-off on these scores is as large" in why
    assert observable.unobservable(Case(**{**case.to_dict(), "dtype": "float32"})) is None
    truth.clear_caches()


class Untouchable:
    """An adapter's stand-in that fails the test if the harness asks it to prepare or run."""

    def __init__(self, adapter):
        self.adapter = adapter
        self.framework = adapter.framework

    def unsupported(self, case):
        return self.adapter.unsupported(case)

    def prepare(self, case, inputs):
        raise AssertionError("an unobservable problem reached the implementation")


def test_the_run_path_refuses_an_unobservable_cap_before_preparing_or_timing(monkeypatch):
    from harness import registry
    from harness.run import execute
    from harness.spec import TimingSettings

    truth.clear_caches()
    case = Case(impl="numpy", batch=2, heads=4, seq_len=64, head_dim=32, softcap=1000.0)

    def far_below_the_cap(asked):
        inputs, ref = truth.problem(asked)
        return {**inputs, "q": inputs["q"] / 1000.0}, ref  # scores of O(1) against 1000

    monkeypatch.setattr(execute, "problem", far_below_the_cap)
    settings = TimingSettings(warmup_s=0.001, min_samples=2, max_samples=3, budget_s=0.01)
    record = execute.execute(case, Untouchable(registry.get("numpy")), settings)
    assert record["status"] == "unsupported", record
    assert record["reason"].startswith("problem refused: softcap 1000 changes this problem's "
                                       "output by")
    assert "\n" not in record["reason"] and "median_s" not in record
    monkeypatch.undo()  # its own inputs reach the cap: the same case is measured and ok
    assert execute.execute(case, registry.get("numpy"), settings)["status"] == "ok"
    truth.clear_caches()


def test_the_run_path_refuses_a_cap_that_bfloat16_round_off_hides():
    from harness import registry
    from harness.run.execute import run_case
    from harness.spec import TimingSettings

    truth.clear_caches()
    case = Case(impl="torch.naive", batch=1, heads=2, seq_len=256, head_dim=16, causal=True,
                softcap=50.0, dtype="bfloat16")
    settings = TimingSettings(warmup_s=0.001, min_samples=2, max_samples=3, budget_s=0.01)
    record = run_case(case, Untouchable(registry.get("torch.naive")), settings)
    assert record["status"] == "unsupported"
    assert record["reason"].startswith("problem refused: ")
    assert "bfloat16 round-off" in record["reason"] and "median_s" not in record
    truth.clear_caches()


def test_cases_without_modifiers_are_always_observable():
    assert observable.unobservable(Case(impl="numpy", seq_len=16, lengths="uniform")) is None
    assert observable.unobservable(Case(impl="torch.mha", level="mha", seq_len=16)) is None


# --- the work model ------------------------------------------------------------------------


def kept_by_brute_force(nq, nk, causal, align, window, keys=None, rows=None):
    """Kept score entries of one head, counted one by one over the real rows and keys."""
    n = nk if keys is None else keys
    r = nq if rows is None else rows
    return sum(1 for i in range(r) for j in range(n)
               if (not causal or j <= last_key(i, nq, n, causal, align))
               and (not window or j > last_key(i, nq, n, causal, align) - window))


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 30), st.integers(0, 30), st.integers(0, 35), st.sampled_from(CAUSAL_ALIGNS))
def test_window_score_entries_count_what_the_mask_keeps(nq, nk, window, align):
    want = kept_by_brute_force(nq, nk, True, align, window)
    assert score_entries(nq, nk, True, align, window) == want
    if nq and nk:
        from harness.problem.inputs import causal_keep
        assert int(causal_keep(nq, nk, align, window=window).sum()) == want


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_flops_count_real_rows_and_kept_keys_of_each_sequence(name):
    case = problem_case(name)
    keys, rows = key_valid_lengths(case), query_valid_lengths(case)
    entries = sum(kept_by_brute_force(case.seq_len, case.seq_len_kv, case.causal,
                                      case.causal_align, case.window,
                                      None if keys is None else int(keys[b]),
                                      None if rows is None else int(rows[b]))
                  for b in range(case.batch))
    assert attention_flops(case) == 4 * case.head_dim * case.heads * entries
    keep = np.broadcast_to(case_keep(case) if case_keep(case) is not None else True,
                           (case.batch, 1, case.seq_len, case.seq_len_kv))
    if rows is None:
        assert entries == int(keep.sum())
    padded = padded_flops(case)
    assert padded == case_flops(Case(**{**case.to_dict(), "lengths": "constant",
                                        "padding": 0.0}))
    assert padded >= case_flops(case)


def test_padded_flops_equal_the_useful_ones_without_a_ragged_batch():
    case = Case(impl="numpy", batch=2, seq_len=64, causal=True, window=9, mode="fwd_bwd")
    assert padded_flops(case) == case_flops(case)


def test_bytes_count_real_queries_of_a_prefill_and_the_bias_once():
    prefill = Case(impl="numpy", batch=4, heads=2, kv_heads=1, seq_len=32, head_dim=8,
                   lengths="bimodal", dtype="float16")
    tokens = int(sequence_lengths(prefill).sum())
    assert tokens == 64
    assert forward_bytes(prefill) == 2 * (2 * 2 * 8 * tokens + 2 * 1 * 8 * tokens)
    per = Case(impl="numpy", batch=2, heads=2, seq_len=4, seq_len_kv=8, head_dim=8,
               bias="batch_head")
    plain = Case(impl="numpy", batch=2, heads=2, seq_len=4, seq_len_kv=8, head_dim=8)
    assert forward_bytes(per) - forward_bytes(plain) == 4 * 2 * 2 * 4 * 8
    shared = Case(impl="numpy", batch=2, heads=2, seq_len=4, seq_len_kv=8, head_dim=8,
                  bias="head", mode="fwd_bwd")
    assert case_bytes(shared) - case_bytes(Case(**{**shared.to_dict(), "bias": "none"})) == \
        2 * 4 * 2 * 4 * 8  # read in the forward and again in the backward
    for mod in ({"alibi": True}, {"softcap": 30.0}):
        assert forward_bytes(Case(**{**plain.to_dict(), **mod})) == forward_bytes(plain)
    windowed = Case(**{**plain.to_dict(), "causal": True, "window": 3})  # top-left: keys 0..3
    # float32 K and V, 2 sequences, 2 K/V heads of 8, the 4 keys past the last query
    assert forward_bytes(plain) - forward_bytes(windowed) == 4 * 2 * 2 * 2 * 8 * (8 - 4)
