"""The float64 truth computed with torch (as on a GPU) is the truth NumPy computes: the formula is
one piece of code for both namespaces, and where it runs is decided in one place. torch on the
CPU stands in for the device here: the code path is the same but for the device's name."""
import numpy as np
import pytest
import torch

from harness.problem import on_device, truth
from harness.problem.gradients import attention_backward
from harness.problem.reference import naive_attention, round_to
from harness.spec import Case

DTYPES = ["float64", "float32", "float16", "bfloat16"]


def _arrays(shape=(2, 3, 150, 32)):
    rng = np.random.default_rng(7)
    return [rng.standard_normal(shape) for _ in range(4)]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_torch_rounds_exactly_as_numpy(dtype):
    x = (np.random.default_rng(1).standard_normal(50_000) * 300).astype(np.float32)
    assert np.array_equal(round_to(x, dtype), round_to(torch.from_numpy(x), dtype).numpy())


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_and_backward_agree_across_namespaces(dtype, causal):
    q, k, v, dout = _arrays()
    t = [torch.from_numpy(a) for a in (q, k, v, dout)]
    out_np = naive_attention(q, k, v, causal, dtype)
    out_t = naive_attention(*t[:3], causal, dtype)
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.from_numpy(out_np).dtype
    grads_np = attention_backward(q, k, v, out_np, dout, causal, dtype)
    grads_t = attention_backward(*t[:3], torch.from_numpy(out_np), t[3], causal, dtype)
    ref = naive_attention(q, k, v, causal, "float64")
    # float64: the same to round-off; lower dtypes: two naive computations a summation order
    # apart, each about its own error from the truth, so within twice it (the tolerance is 4x)
    naive_err = np.abs(out_np - ref).max()
    agree = 1e-13 if dtype == "float64" else 2 * naive_err
    assert np.abs(out_np - out_t.numpy()).max() <= agree
    for g_np, g_t in zip(grads_np, grads_t):
        scale = np.abs(g_np).max()
        assert np.abs(g_np - g_t.numpy()).max() <= (1e-13 if dtype == "float64" else 1e-2) * scale


@pytest.mark.parametrize("kv_heads, nq, nk", [(1, 7, 4), (2, 3, 17), (2, 1, 17)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_grouped_bottom_right_truth_agrees_across_namespaces(dtype, kv_heads, nq, nk):
    rng = np.random.default_rng(11)
    q, dout = (rng.standard_normal((2, 4, nq, 16)) for _ in range(2))
    k, v = (rng.standard_normal((2, kv_heads, nk, 16)) for _ in range(2))
    valid = np.array([nk, max(1, nk - 5)])
    out_np = naive_attention(q, k, v, True, dtype, valid, "bottom_right")
    t = [torch.from_numpy(a) for a in (q, k, v, dout)]
    out_t = naive_attention(*t[:3], True, dtype, valid, "bottom_right")
    grads_np = attention_backward(q, k, v, out_np, dout, True, dtype, valid, "bottom_right")
    grads_t = attention_backward(*t[:3], torch.from_numpy(out_np), t[3], True, dtype, valid,
                                 "bottom_right")
    ref = naive_attention(q, k, v, True, "float64", valid, "bottom_right")
    naive_err = np.abs(out_np - ref).max()
    assert np.isfinite(out_t.numpy()).all()
    assert np.abs(out_np - out_t.numpy()).max() <= (1e-13 if dtype == "float64" else 2 * naive_err)
    for g_np, g_t in zip(grads_np, grads_t):
        assert g_t.shape == g_np.shape and np.isfinite(g_t.numpy()).all()
        scale = np.abs(g_np).max()
        assert np.abs(g_np - g_t.numpy()).max() <= (1e-13 if dtype == "float64" else 1e-2) * scale
    assert grads_t[1].shape == (2, kv_heads, nk, 16)


def _case(**kw):
    return Case(**{"impl": "torch.sdpa", "heads": 2, "seq_len": 96, "head_dim": 16, **kw})


def test_only_a_kernel_case_on_a_visible_gpu_in_a_torch_process_goes_to_the_device():
    assert on_device.torch_device_for(_case()) is None  # the CPU
    assert on_device.torch_device_for(_case(level="mha")) is None
    # torch is loaded in this process, but it sees no GPU here
    assert not torch.cuda.is_available()
    assert on_device.torch_device_for(_case(device="cuda")) is None


@pytest.fixture
def on_torch(monkeypatch):
    """Pretend the cases' device is torch's (its CPU): the whole path but the device's name."""
    truth.clear_caches()
    monkeypatch.setattr(on_device, "torch_device_for", lambda case: "cpu")
    yield
    truth.clear_caches()


@pytest.mark.parametrize("mode", ["fwd", "fwd_bwd"])
@pytest.mark.parametrize("problem", [{}, {"kv_heads": 1, "seq_len": 40, "seq_len_kv": 96,
                                         "causal_align": "bottom_right"},
                                     {"lengths": "bimodal", "window": 9, "alibi": True,
                                      "bias": "batch_head", "softcap": 3.0}],
                         ids=["mha", "gqa-br", "ragged-mods"])
def test_a_truth_computed_with_torch_is_the_numpy_truth(on_torch, monkeypatch, mode, problem):
    case = _case(mode=mode, dtype="bfloat16", causal=True, **problem)
    brought_back = []
    to_numpy = on_device._to_numpy
    monkeypatch.setattr(on_device, "_to_numpy", lambda v: brought_back.append(v) or to_numpy(v))
    with_torch = (truth.problem(case)[1], truth.reference_grads(case), truth.tolerance_for(case),
                  truth.grad_tolerances_for(case))
    assert isinstance(with_torch[0], np.ndarray)
    # every naive run was torch's: the float64 reference (with its gradients, for fwd_bwd, in
    # the same run) and the bfloat16 run the tolerance is built from
    results = [v for v in brought_back if isinstance(v, tuple)]  # (out, grads), not their parts
    assert len(results) == 2
    assert all(isinstance(out, torch.Tensor) for out, _ in results)
    truth.clear_caches()
    monkeypatch.setattr(on_device, "torch_device_for", lambda case: None)
    with_numpy = (truth.problem(case)[1], truth.reference_grads(case), truth.tolerance_for(case),
                  truth.grad_tolerances_for(case))
    assert np.allclose(with_torch[0], with_numpy[0], rtol=0, atol=1e-13)
    if mode == "fwd_bwd":
        for name, g in with_numpy[1].items():
            assert np.allclose(with_torch[1][name], g, rtol=0, atol=1e-12)
            assert with_torch[3][name] == pytest.approx(with_numpy[3][name], rel=0.25)
    assert with_torch[2] == pytest.approx(with_numpy[2], rel=0.25)


def test_the_truth_is_computed_at_full_float32_precision_whatever_was_set(on_torch):
    seen = []

    def compute(arrays):
        seen.append(torch.get_float32_matmul_precision())
        return (arrays["q"], None)

    torch.set_float32_matmul_precision("medium")  # as an implementation might (TF32, bf16)
    try:
        on_device.computed(_case(), compute, {"q": np.ones((1, 1, 4, 2))})
        assert seen == ["highest"] and torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision("highest")


def test_a_device_that_cannot_hold_the_truth_hands_it_to_the_cpu(on_torch, capsys):
    calls = []

    def compute(arrays):
        calls.append(type(arrays["q"]))
        if isinstance(arrays["q"], torch.Tensor):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 GiB")
        return (arrays["q"] * 2, None)

    q = np.ones((1, 1, 4, 2))
    out, _ = on_device.computed(_case(), compute, {"q": q})
    assert calls == [torch.Tensor, np.ndarray] and np.array_equal(out, q * 2)
    assert "computing it on the CPU" in capsys.readouterr().err


MODIFIED = [  # Case fields: a ragged batch with every modifier, and a window with ALiBi alone
    dict(seq_len=5, seq_len_kv=40, causal=True, causal_align="bottom_right", lengths="uniform",
         window=9, alibi=True, bias="batch_head", softcap=4.0, kv_heads=1),
    dict(seq_len=40, causal=True, lengths="longtail", window=7, alibi=True, heads=3,
         kv_heads=3),
    dict(seq_len=40, seq_len_kv=24, bias="head", softcap=2.0),
]


@pytest.mark.parametrize("fields", MODIFIED, ids=["decode-all", "prefill-window-alibi",
                                                  "bias-softcap"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_modified_truth_agrees_across_namespaces(monkeypatch, dtype, fields):
    from harness.problem import reference
    from harness.problem.gradients import kernel_forward_backward
    from harness.problem.inputs import grad_output, kernel_inputs

    monkeypatch.setattr(reference, "ROW_CHUNK", 16)  # rows of the bias and of ALiBi by chunk
    case = _case(**{"batch": 2, "mode": "fwd_bwd", **fields})
    inputs = kernel_inputs(case)
    inputs["dout"] = grad_output(case, inputs["q"].shape)
    out_np, grads_np = kernel_forward_backward(case, inputs, dtype)
    out_t, grads_t = kernel_forward_backward(case, {n: torch.from_numpy(a)
                                                    for n, a in inputs.items()}, dtype)
    ref, _ = kernel_forward_backward(case, inputs)
    naive_err = np.abs(out_np - ref).max()
    assert np.isfinite(out_t.numpy()).all()
    assert np.abs(out_np - out_t.numpy()).max() <= (1e-13 if dtype == "float64" else
                                                    2 * naive_err)
    for name, g_np in grads_np.items():
        g_t = grads_t[name].numpy()
        assert g_t.shape == g_np.shape and np.isfinite(g_t).all()
        scale = np.abs(g_np).max()
        assert np.abs(g_np - g_t).max() <= (1e-12 if dtype == "float64" else 3e-2) * scale, name


def test_observability_computed_with_torch_is_numpys(on_torch, monkeypatch):
    from harness.problem import observable

    case = _case(dtype="float16", causal=True, lengths="uniform", batch=2, window=20,
                 alibi=True, bias="head", softcap=8.0)
    with_torch = observable.modifier_effects(case)
    truth.clear_caches()
    monkeypatch.setattr(on_device, "torch_device_for", lambda case: None)
    with_numpy = observable.modifier_effects(case)
    assert set(with_torch) == {"window", "alibi", "bias", "softcap"}
    assert with_torch == pytest.approx(with_numpy, abs=1e-12)
    assert observable.unobservable(case) is None
