"""The float64 reference and the tolerance policy."""
import numpy as np
import pytest
import torch

from harness.problem import reference
from harness.problem.reference import compare, naive_attention, reference_output, round_to, tolerance


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
