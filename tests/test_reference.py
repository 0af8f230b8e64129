"""The float64 reference and the tolerance policy."""
import zlib

import numpy as np
import pytest
import torch

from harness.case import BOTTOM_RIGHT, TOP_LEFT
from harness.problem import reference, truth
from harness.problem.inputs import kernel_inputs, key_valid_lengths, problem_seed
from harness.problem.reference import compare, naive_attention, reference_output, round_to, tolerance
from harness.spec import Case


def qkv(shape=(2, 3, 40, 16), nk=None, seed=0):
    rng = np.random.default_rng(seed)
    kshape = shape[:2] + ((nk or shape[2]), shape[3])
    return rng.standard_normal(shape), rng.standard_normal(kshape), rng.standard_normal(kshape)


def direct(q, k, v, causal):
    s = np.einsum("bhqd,bhkd->bhqk", q, k) / np.sqrt(q.shape[-1])
    if causal:
        s = np.where(np.tril(np.ones(s.shape[-2:], bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    return np.einsum("bhqk,bhkd->bhqd", p / p.sum(-1, keepdims=True), v)


@pytest.mark.parametrize("causal", [False, True])
def test_chunked_reference_equals_the_direct_formula(monkeypatch, causal):
    monkeypatch.setattr(reference, "ROW_CHUNK", 7)
    q, k, v = qkv()
    assert np.allclose(reference_output(q, k, v, causal), direct(q, k, v, causal), atol=1e-13)


def test_causal_first_row_is_the_first_value():
    q, k, v = qkv(nk=25)
    out = reference_output(q, k, v, causal=True)
    assert np.allclose(out[:, :, 0, :], v[:, :, 0, :])


@pytest.mark.parametrize("dtype, torch_dtype", [("bfloat16", torch.bfloat16), ("float16", torch.float16)])
def test_rounding_matches_torch(dtype, torch_dtype):
    x = np.random.default_rng(0).standard_normal(10000).astype(np.float32) * 100
    expected = torch.from_numpy(x).to(torch_dtype).float().numpy()
    assert np.array_equal(round_to(x, dtype), expected)


def test_low_precision_naive_errors_are_ordered():
    q, k, v = qkv((1, 4, 256, 64))
    ref = reference_output(q, k, v, False)
    errs = {d: np.abs(naive_attention(q, k, v, False, d) - ref).max()
            for d in ("float32", "float16", "bfloat16")}
    assert errs["float32"] < errs["float16"] < errs["bfloat16"]
    assert 1e-3 < errs["bfloat16"] < 0.1


def test_tolerance_is_a_multiple_of_the_naive_error_with_a_floor():
    q, k, v = qkv((1, 4, 256, 64))
    ref = reference_output(q, k, v, False)
    naive_bf16 = np.abs(naive_attention(q, k, v, False, "bfloat16") - ref).max()
    assert tolerance(q, k, v, False, "bfloat16", ref) == pytest.approx(4 * naive_bf16)
    assert tolerance(q, k, v, False, "float32", ref) == reference.ABS_FLOOR["float32"]


def test_torch_bf16_sdpa_is_within_tolerance_and_an_unscaled_one_is_not():
    q, k, v = qkv((1, 4, 128, 64))
    ref = reference_output(q, k, v, False)
    tol = tolerance(q, k, v, False, "bfloat16", ref)
    tq, tk, tv = (torch.from_numpy(x).to(torch.bfloat16) for x in (q, k, v))
    good = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv).double().numpy()
    bad = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, scale=1.0).double().numpy()
    assert compare(good, ref)["max_abs_err"] <= tol
    assert compare(bad, ref)["max_abs_err"] > 10 * tol


def test_compare_reports_relative_error_and_non_finite_output():
    ref = np.ones((2, 2))
    result = compare(ref * 1.01, ref)
    assert result["rel_err"] == pytest.approx(0.01)
    assert result["max_abs_err"] == pytest.approx(0.01)
    assert compare(np.array([[np.nan, 1], [1, 1]]), ref)["finite"] is False


# --- grouped K/V heads and the causal alignment, against a direct computation ---------------

def looped(q, k, v, causal, align=TOP_LEFT, valid=None):
    """The problem by its definition, one (batch, head, query) at a time, in float64: query
    head h reads K/V head h // (H // Hkv); query i of sequence b keeps key j when j is one of
    the sequence's real keys (j < n, n its unpadded count) and, under a causal mask, j <= i
    (top-left) or j <= n - Nq + i (bottom-right); a query that keeps no key outputs 0."""
    b_, h_, nq, d = q.shape
    hkv, nk = k.shape[1], k.shape[2]
    out = np.zeros((b_, h_, nq, v.shape[-1]))
    for b in range(b_):
        n = nk if valid is None else int(valid[b])
        for h in range(h_):
            g = h // (h_ // hkv)
            for i in range(nq):
                last = (i if align == TOP_LEFT else n - nq + i) if causal else n - 1
                keys = [j for j in range(n) if j <= last]
                if not keys:
                    continue
                s = np.array([q[b, h, i] @ k[b, g, j] for j in keys]) / np.sqrt(d)
                p = np.exp(s - s.max())
                out[b, h, i] = (p / p.sum()) @ v[b, g, keys]
    return out


def grouped_qkv(heads, kv_heads, nq, nk, d=8, batch=2, seed=3):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((batch, heads, nq, d)), rng.standard_normal((batch, kv_heads, nk, d)),
            rng.standard_normal((batch, kv_heads, nk, d)))


@pytest.mark.parametrize("kv_heads", [8, 2, 1])
@pytest.mark.parametrize("causal", [False, True])
def test_grouped_kv_heads_equal_the_direct_formula(monkeypatch, kv_heads, causal):
    monkeypatch.setattr(reference, "ROW_CHUNK", 4)
    q, k, v = grouped_qkv(8, kv_heads, 9, 13)
    out = reference_output(q, k, v, causal)
    assert out.shape == q.shape
    assert np.abs(out - looped(q, k, v, causal)).max() < 1e-13


@pytest.mark.parametrize("nq, nk", [(3, 17), (1, 17), (17, 17), (7, 4)])
@pytest.mark.parametrize("kv_heads", [4, 2])
def test_bottom_right_alignment_equals_the_direct_formula(monkeypatch, nq, nk, kv_heads):
    monkeypatch.setattr(reference, "ROW_CHUNK", 2)
    q, k, v = grouped_qkv(4, kv_heads, nq, nk)
    out = reference_output(q, k, v, True, align=BOTTOM_RIGHT)
    assert np.isfinite(out).all()
    assert np.abs(out - looped(q, k, v, True, BOTTOM_RIGHT)).max() < 1e-13
    if nq > nk:  # the first Nq - Nk queries precede every key: output 0
        assert not out[:, :, : nq - nk].any() and out[:, :, nq - nk:].all()


def test_a_one_token_bottom_right_step_sees_every_key_and_top_left_only_the_first():
    q, k, v = grouped_qkv(2, 1, 1, 17)
    full = reference_output(q, k, v, False)
    assert np.abs(reference_output(q, k, v, True, align=BOTTOM_RIGHT) - full).max() < 1e-15
    assert np.allclose(reference_output(q, k, v, True), np.broadcast_to(v[:, :, :1], full.shape))


@pytest.mark.parametrize("align", [TOP_LEFT, BOTTOM_RIGHT])
def test_key_padding_places_a_bottom_right_mask_at_each_sequences_real_keys(monkeypatch, align):
    monkeypatch.setattr(reference, "ROW_CHUNK", 3)
    case = Case(impl="numpy", batch=3, heads=4, kv_heads=2, seq_len=6, seq_len_kv=11,
                head_dim=8, causal=True, causal_align=align, padding=0.7)
    valid = key_valid_lengths(case)
    assert min(valid) < case.seq_len  # some queries of that sequence precede every key
    x = kernel_inputs(case)
    out = reference_output(x["q"], x["k"], x["v"], True, valid, align)
    assert np.abs(out - looped(x["q"], x["k"], x["v"], True, align, valid)).max() < 1e-13


def test_the_truth_of_a_grouped_bottom_right_case_is_the_direct_formula():
    truth.clear_caches()
    case = Case(impl="numpy", batch=2, heads=8, kv_heads=2, seq_len=3, seq_len_kv=17,
                head_dim=16, causal=True, causal_align=BOTTOM_RIGHT, dtype="bfloat16")
    inputs, ref = truth.problem(case)
    assert inputs["q"].shape == (2, 8, 3, 16) and inputs["k"].shape == (2, 2, 17, 16)
    assert inputs["v"].shape == inputs["k"].shape
    assert np.abs(ref - looped(inputs["q"], inputs["k"], inputs["v"], True, BOTTOM_RIGHT)).max() < 1e-13
    naive = naive_attention(inputs["q"], inputs["k"], inputs["v"], True, "bfloat16",
                            align=BOTTOM_RIGHT)
    assert truth.tolerance_for(case) == pytest.approx(4 * np.abs(naive - ref).max())
    truth.clear_caches()


def test_inputs_with_kv_heads_equal_to_heads_are_the_numbers_drawn_before_the_field_existed():
    case = Case(impl="numpy", batch=2, heads=4, seq_len=16, seq_len_kv=24, head_dim=8, seed=5,
                causal=True)
    explicit = Case(impl="numpy", batch=2, heads=4, kv_heads=4, seq_len=16, seq_len_kv=24,
                    head_dim=8, seed=5, causal=True, causal_align=TOP_LEFT)
    # the seed recipe and the draw order as they were: q, k, v from one stream, all H heads
    old_key = ("kernel", 2, 4, 16, 24, 8, True, 5)
    seed = zlib.crc32(repr(old_key).encode()) ^ (5 * 0x9E3779B1 % 2**32)
    assert problem_seed(case) == problem_seed(explicit) == seed
    rng = np.random.default_rng(seed)
    old = {"q": rng.standard_normal((2, 4, 16, 8)), "k": rng.standard_normal((2, 4, 24, 8)),
           "v": rng.standard_normal((2, 4, 24, 8))}
    for inputs in (kernel_inputs(case), kernel_inputs(explicit)):
        assert all(np.array_equal(inputs[n], old[n]) for n in "qkv")
    grouped = kernel_inputs(Case(impl="numpy", batch=2, heads=4, kv_heads=2, seq_len=16,
                                 seq_len_kv=24, head_dim=8, seed=5, causal=True))
    assert grouped["k"].shape == (2, 2, 24, 8)
