"""Mode fwd_bwd: forward plus the backward of L = sum(out · G), every level.

The NumPy reference gradients (harness.problem.gradients, harness.problem.layers) are checked here against
torch autograd in float64, an independent implementation; then every adapter's gradients are
checked against them (kernels: q, k, v; layers: x and every weight), and wrong gradients are
caught. TensorFlow-family adapters run in a child process (tests/tf_cases_worker.py).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from harness.problem import check, truth

from harness.problem import layers, reference

from harness import registry
from harness.run.execute import run_case
from harness.case import BOTTOM_RIGHT, TOP_LEFT
from harness.problem.gradients import attention_backward, kernel_forward_backward
from harness.problem.inputs import case_keep, grad_output, kernel_inputs, key_valid_lengths
from harness.spec import Case
from impls.numpy_ref import NumpyAttention
from layer_cases import (FAMILY_KERNELS, FAST, KERAS_LAYERS, MASKS, SHAPES, TORCH_LAYERS,
                         assert_ok, family_kernel_cases, family_layer_cases, family_run,
                         layer_cases, needs_tf, quick_check, require_family, run_tf_cases)

# --- the reference gradients against torch autograd in float64 ----------------------------


def torch_layer(case, inputs):
    """The layer written directly in torch float64, differentiated by autograd."""
    t = {k: torch.tensor(v, requires_grad=True) for k, v in inputs.items() if k != "dout"}
    keep = case_keep(case)
    bias = None if keep is None else torch.tensor(np.where(keep, 0.0, -np.inf))
    heads = case.heads

    def linear(x, w, b):
        return x @ t[w] + t[b]

    def mha(x):
        b, n, d = x.shape
        def split(y):
            return y.reshape(b, n, heads, d // heads).transpose(1, 2)
        q, k, v = (split(linear(x, f"w{p}", f"b{p}")) for p in "qkv")
        s = q @ k.transpose(-1, -2) / math.sqrt(d // heads)
        o = torch.softmax(s if bias is None else s + bias, -1) @ v
        return linear(o.transpose(1, 2).reshape(b, n, d), "wo", "bo")

    def norm(x, name):
        return torch.nn.functional.layer_norm(x, x.shape[-1:], t[f"{name}_g"], t[f"{name}_b"], 1e-5)

    def ffn(h):
        return linear(torch.relu(linear(h, "w1", "b1")), "w2", "b2")

    x = t["x"]
    if case.level == "mha":
        y = mha(x)
    elif case.norm == "post":
        h = norm(x + mha(x), "ln1")
        y = norm(h + ffn(h), "ln2")
    else:
        h = x + mha(norm(x, "ln1"))
        y = h + ffn(norm(h, "ln2"))
    grads = torch.autograd.grad(y, list(t.values()), torch.tensor(inputs["dout"]))
    return y.detach().numpy(), {n: g.numpy() for n, g in zip(t, grads)}


@pytest.mark.parametrize("level", ["mha", "encoder"])
@pytest.mark.parametrize("norm", ["post", "pre"])
@pytest.mark.parametrize("causal, padding", MASKS)
def test_layer_reference_gradients_equal_torch_autograd(monkeypatch, level, norm, causal, padding):
    if level == "mha" and norm == "pre":
        pytest.skip("norm describes encoder blocks")
    monkeypatch.setattr(reference, "ROW_CHUNK", 5)  # several query chunks in the backward too
    case = Case(impl="torch.mha", level=level, batch=2, heads=3, head_dim=8, seq_len=13,
                causal=causal, padding=padding, norm=norm)
    inputs = layers.layer_inputs(case)
    inputs["dout"] = grad_output(case, inputs["x"].shape)
    out, grads = layers.forward_backward(case, inputs)
    want_out, want = torch_layer(case, inputs)
    assert np.abs(out - want_out).max() < 1e-12
    assert set(grads) == set(want) == {"x", *layers.weight_names(level)}
    for name in want:
        scale = max(1, np.abs(want[name]).max())
        assert np.abs(grads[name] - want[name]).max() < 1e-11 * scale, name


@pytest.mark.parametrize("nq, nk", [(20, 20), (9, 15), (15, 9), (1, 1)])
@pytest.mark.parametrize("causal", [False, True])
def test_kernel_reference_gradients_equal_torch_autograd(monkeypatch, nq, nk, causal):
    monkeypatch.setattr(reference, "ROW_CHUNK", 4)
    case = Case(impl="numpy", batch=2, heads=3, seq_len=nq, seq_len_kv=nk, head_dim=8,
                causal=causal)
    inputs = kernel_inputs(case)
    inputs["dout"] = grad_output(case, (2, 3, nq, 8))
    out, grads = kernel_forward_backward(case, inputs)
    q, k, v = (torch.tensor(inputs[n], requires_grad=True) for n in "qkv")
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
    wants = torch.autograd.grad(want, (q, k, v), torch.tensor(inputs["dout"]))
    assert np.abs(out - want.detach().numpy()).max() < 1e-13
    for name, w in zip("qkv", wants):
        assert np.abs(grads[name] - w.numpy()).max() < 1e-13, name


def test_low_precision_gradients_are_less_accurate_in_order():
    case = Case(impl="torch.encoder", level="encoder", batch=1, heads=2, head_dim=16, seq_len=24)
    inputs = layers.layer_inputs(case)
    inputs["dout"] = grad_output(case, inputs["x"].shape)
    _, exact = layers.forward_backward(case, inputs)
    err = {}
    for dtype in ("float32", "bfloat16"):
        _, naive = layers.forward_backward(case, inputs, dtype)
        err[dtype] = max(np.abs(g - exact[n]).max() for n, g in naive.items())
    assert 0 < err["float32"] < 1e-4 < err["bfloat16"] < 5


def test_grad_output_is_seeded_and_independent_of_mode():
    a = Case(impl="numpy", seq_len=8, heads=2, head_dim=4)
    b = dataclasses.replace(a, mode="fwd_bwd", impl="torch.sdpa")
    assert np.array_equal(grad_output(a, (3,)), grad_output(b, (3,)))
    assert np.array_equal(kernel_inputs(a)["q"], kernel_inputs(b)["q"])


def test_gradient_tolerances_follow_the_policy():
    case = Case(impl="torch.mha", level="mha", mode="fwd_bwd", dtype="float32", heads=2,
                head_dim=8, seq_len=16)
    grads, tols = truth.reference_grads(case), truth.grad_tolerances_for(case)
    assert set(tols) == set(grads)
    inputs, _ = truth.problem(case)
    _, naive = layers.forward_backward(case, inputs, "float32")
    for name, g in grads.items():
        floor = reference.ABS_FLOOR["float32"] * max(1.0, np.abs(g).max())
        assert tols[name] == pytest.approx(max(floor, 4 * np.abs(naive[name] - g).max()))
    f64 = dataclasses.replace(case, dtype="float64")
    assert truth.grad_tolerances_for(f64)["x"] == pytest.approx(
        1e-10 * max(1.0, np.abs(grads["x"]).max()))


# --- kernels: every adapter's gradients ----------------------------------------------------

KERNEL_SHAPES = [(2, 4, 64, 64, 32), (1, 3, 77, 77, 40), (1, 2, 1, 1, 16), (1, 2, 33, 50, 24)]
TORCH_KERNELS = ["numpy", "torch.naive", "torch.sdpa", "torch.sdpa.math", "torch.sdpa.flash"]
TF_KERNELS = ["tf.naive", "keras.ops", "tf.naive.graph", "tf.naive.xla"]
# torch.compile'd kernels compile each case (seconds): the odd shape, causal, and one token
COMPILED_BWD = [Case(impl=name, mode="fwd_bwd", dtype="float32", batch=b, heads=h, seq_len=n,
                     seq_len_kv=nk, head_dim=d, causal=causal)
                for name in ("torch.compile.naive", "torch.compile.sdpa")
                for (b, h, n, nk, d), causal in ((KERNEL_SHAPES[1], True),
                                                 (KERNEL_SHAPES[2], False))]


def kernel_cases(names, dtypes=("float64", "float32", "bfloat16")):
    return [Case(impl=name, mode="fwd_bwd", dtype=dtype, batch=b, heads=h, seq_len=n,
                 seq_len_kv=nk, head_dim=d, causal=causal)
            for (b, h, n, nk, d) in KERNEL_SHAPES for causal in (False, True)
            for dtype in dtypes for name in names]


@pytest.mark.parametrize("case", kernel_cases(TORCH_KERNELS) + COMPILED_BWD,
                         ids=lambda c: c.case_id)
def test_kernel_fwd_bwd(case):
    adapter = registry.get(case.impl)
    result = quick_check(case, adapter)
    if case.impl == "numpy" and case.dtype == "bfloat16":
        assert result["status"] == "unsupported"
        return
    assert_ok(case, result)
    assert set(result["grad_errors"]) == {"q", "k", "v"}


def test_kernel_fwd_bwd_through_the_worker_path():
    """run_case: timing, kernel detection and memory passes work on (out, grads) calls."""
    case = Case(impl="torch.sdpa", mode="fwd_bwd", heads=2, seq_len=64, head_dim=32, causal=True)
    result = run_case(case, registry.get("torch.sdpa"), FAST)
    assert result["status"] == "ok" and result["kernel"] == "flash_attention", result
    assert result["median_s"] > 0 and result["grad_err_ratio"] <= 1


def test_each_call_computes_fresh_gradients():
    """Nothing accumulates between timed calls: the second call's gradients equal the first's."""
    case = Case(impl="torch.mha.naive", level="mha", mode="fwd_bwd", heads=2, head_dim=8,
                seq_len=8)
    inputs, _ = truth.problem(case)
    prepared = registry.get(case.impl).prepare(case, inputs)
    try:
        first = prepared.grads_to_numpy(prepared.call()[1])
        second = prepared.grads_to_numpy(prepared.call()[1])
    finally:
        prepared.close()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])


# --- wrong gradients are caught ------------------------------------------------------------

class WrongBackwardScale(NumpyAttention):
    """Right forward; dq forgets the 1/√d factor of the backward."""
    name = "test.wrong.backward_scale"

    def prepare(self, case, inputs):
        prepared = super().prepare(case, inputs)
        call = prepared.call

        def wrong():
            out, grads = call()
            return out, {**grads, "q": grads["q"] * math.sqrt(case.head_dim)}

        return dataclasses.replace(prepared, call=wrong, grads_to_numpy=None)


class MissingGradient(NumpyAttention):
    name = "test.wrong.missing_gradient"

    def prepare(self, case, inputs):
        prepared = super().prepare(case, inputs)
        call = prepared.call

        def partial():
            out, grads = call()
            return out, {"q": grads["q"], "k": grads["k"]}

        return dataclasses.replace(prepared, call=partial, grads_to_numpy=None)


@pytest.fixture
def scratch_registry(monkeypatch):
    registry.adapters()
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


@pytest.mark.parametrize("wrong, says", [(WrongBackwardScale, "gradient q: max_abs_err"),
                                         (MissingGradient, "no gradient for v")])
def test_wrong_kernel_gradient_is_caught(scratch_registry, wrong, says):
    registry.register(wrong())
    case = Case(impl=wrong.name, mode="fwd_bwd", dtype="float32", batch=2, heads=2,
                seq_len=33, seq_len_kv=40, head_dim=16, causal=True)
    result = run_case(case, registry.get(wrong.name), FAST)
    assert result["status"] == "mismatch" and says in result["reason"], result
    control = quick_check(dataclasses.replace(case, impl="numpy"), registry.get("numpy"))
    assert control["status"] == "ok", control


def test_a_computation_cut_off_from_autograd_is_caught(scratch_registry):
    """A layer that detaches the attention output before its output projection computes the
    right output, but no gradient reaches x, Wq, Wk, Wv: fwd passes, fwd_bwd is a mismatch."""
    from impls.encoders import NaiveMHA

    class DetachedOutput(NaiveMHA):
        name = "test.wrong.detached"

        def build(self, case, factory, labels):
            module = super().build(case, factory, labels)
            project = module.W_o.forward
            module.W_o.forward = lambda t: project(t.detach())
            return module

    registry.register(DetachedOutput())
    case = Case(impl=DetachedOutput.name, level="mha", heads=3, head_dim=8, seq_len=9)
    assert quick_check(case, registry.get(case.impl))["status"] == "ok"
    result = quick_check(dataclasses.replace(case, mode="fwd_bwd"), registry.get(case.impl))
    assert result["status"] == "mismatch" and "gradient wq" in result["reason"], result
    assert result["grad_errors"]["wo"]["max_abs_err"] < 1e-5  # what does flow is right


# --- layers: every adapter's gradients -----------------------------------------------------

TORCH_BWD = (layer_cases(TORCH_LAYERS, "fwd_bwd", ("float64", "float32"))
             + layer_cases(TORCH_LAYERS, "fwd_bwd", ("bfloat16",), shapes=SHAPES[:1])
             + layer_cases({"encoder": TORCH_LAYERS["encoder"]}, "fwd_bwd", ("float32",),
                           shapes=SHAPES[1:2], masks=MASKS[3:], norms=("pre",)))


@pytest.mark.parametrize("case", TORCH_BWD, ids=lambda c: c.case_id)
def test_torch_layer_fwd_bwd(case):
    result = quick_check(case, registry.get(case.impl))
    if case.impl.endswith(".eval"):
        assert result["status"] == "unsupported" and "modes fwd" in result["reason"]
        return
    assert_ok(case, result)
    assert set(result["grad_errors"]) == {"x", *layers.weight_names(case.level)}


# --- TensorFlow family, in a child process -------------------------------------------------

TF_BWD = (kernel_cases(TF_KERNELS[:2], ("float64", "float32"))
          + [c for c in kernel_cases(TF_KERNELS[2:], ("float32",)) if c.seq_len in (1, 77)]
          + layer_cases(KERAS_LAYERS, "fwd_bwd", ("float64", "float32"))
          + layer_cases({"encoder": KERAS_LAYERS["encoder"]}, "fwd_bwd", ("float32",),
                        shapes=SHAPES[1:2], masks=MASKS[3:], norms=("pre",)))


@pytest.fixture(scope="module")
def tf_run():
    return run_tf_cases(TF_BWD, full=[c for c in TF_BWD if c.seq_len == 23 and c.causal
                                      and c.padding and c.dtype == "float32"])


@pytest.mark.tf
@needs_tf
def test_tf_child_keeps_torch_out(tf_run):
    assert tf_run["tensorflow_imported"] and not tf_run["torch_imported"]


@pytest.mark.tf
@needs_tf
@pytest.mark.parametrize("case", TF_BWD, ids=lambda c: c.case_id)
def test_tf_family_fwd_bwd(tf_run, case):
    result = tf_run["records"][case.case_id]
    assert_ok(case, result)
    names = {"q", "k", "v"} if case.level == "kernel" else {"x", *layers.weight_names(case.level)}
    assert set(result["grad_errors"]) == names


def test_flex_backward_on_cpu_is_unsupported_in_torchs_words():
    case = Case(impl="torch.flex", mode="fwd_bwd", heads=2, seq_len=16, head_dim=16, causal=True)
    result = quick_check(case, registry.get("torch.flex"))
    assert result["status"] == "unsupported", result
    assert result["reason"].startswith("flex_attention backward is not supported on cpu in torch")
    assert "FlexAttention does not support backward on CPU" in result["reason"]
    assert "\n" not in result["reason"]


def test_compiled_encoder_fwd_bwd():
    case = Case(impl="torch.compile.encoder", level="encoder", mode="fwd_bwd", heads=3,
                head_dim=32, seq_len=23, causal=True)
    result = quick_check(case, registry.get(case.impl))
    assert_ok(case, result)
    assert set(result["grad_errors"]) == {"x", *layers.weight_names("encoder")}


# --- JAX and Keras on JAX / torch (child processes, shared with tests/test_adapters.py) -----

FAMILY_BWD = [(family, case) for family in sorted(FAMILY_KERNELS)
              for case in family_kernel_cases(family, "fwd_bwd")
              + family_layer_cases(family, "fwd_bwd")]


@pytest.mark.parametrize("family, case", FAMILY_BWD, ids=lambda p: getattr(p, "case_id", p))
def test_family_fwd_bwd(family, case):
    require_family(family)
    result = family_run(family)["records"][case.case_id]
    if case.dtype not in registry.get(case.impl).dtypes:
        assert result["status"] == "unsupported" and case.dtype in result["reason"], result
        return
    assert_ok(case, result)
    names = {"q", "k", "v"} if case.level == "kernel" else {"x", *layers.weight_names(case.level)}
    assert set(result["grad_errors"]) == names


# --- gradients through the encoder's ReLU are judged on their norm --------------------------

def fake_prepared(case, bump: float):
    """The reference itself (in the case's dtype) with one gradient entry moved by `bump`
    relative to that gradient's norm: the shape of a ReLU flip (one entry of dW1 moves)."""
    from impls.base import Prepared

    inputs, ref = truth.problem(case)
    grads = {n: g.astype(np.float32) for n, g in truth.reference_grads(case).items()}
    name = "w1" if "w1" in grads else "wo"
    grads[name] = grads[name].copy()
    grads[name][0, 0] += bump * np.linalg.norm(grads[name])
    result = (ref.astype(np.float32), grads)
    return Prepared(call=lambda: result, to_numpy=lambda a: a.astype(np.float64),
                    out_dtype=lambda a: a.dtype.name)


@pytest.mark.parametrize("level, bump, status", [
    ("encoder", 5e-4, "ok"),        # a flip's size in norm (measured at N=4096: 3e-4..6e-4)
    ("encoder", 2e-2, "mismatch"),  # beyond it
    ("mha", 5e-4, "mismatch"),      # no ReLU in mha: judged element-wise
])
def test_gradient_policy_by_level(level, bump, status):
    case = Case(impl="torch.encoder", level=level, mode="fwd_bwd", heads=2, head_dim=16,
                seq_len=32)
    prepared = fake_prepared(case, bump)
    inputs, ref = truth.problem(case)
    result = check.check_output(case, prepared, prepared.call(), ref, truth.tolerance_for(case))
    assert result["status"] == status, result["reason"]
    judged = {e["on"] for e in result["grad_errors"].values()}
    assert judged == {"norm_err" if level == "encoder" else "max_abs_err"}


def test_norm_policy_still_catches_a_wrong_layout_in_an_encoder(scratch_registry):
    from impls.encoders import TorchEncoder

    class Untransposed(TorchEncoder):
        name = "test.wrong.encoder_layout"

        def weight_map(self, case):
            return [(ref, param, rows, not t if ref == "w1" else t)
                    for ref, param, rows, t in super().weight_map(case)]

    registry.register(Untransposed())
    case = Case(impl=Untransposed.name, level="encoder", mode="fwd_bwd", heads=2, head_dim=16,
                seq_len=32, ffn_mult=1)  # square W1, so only the layout is wrong, not the shape
    result = quick_check(case, registry.get(case.impl))
    assert result["status"] == "mismatch", result


# --- grouped K/V heads and the causal alignment: the backward, against torch autograd -------


def keep_by_definition(nq, nk, causal, align, valid, batch):
    """(B, 1, Nq, Nk): query i of sequence b keeps key j when j < n (its real keys) and, under
    a causal mask, j <= i (top-left) or j <= n - Nq + i (bottom-right)."""
    keep = np.zeros((batch, 1, nq, nk), dtype=bool)
    for b in range(batch):
        n = nk if valid is None else int(valid[b])
        for i in range(nq):
            last = (i if align == TOP_LEFT else n - nq + i) if causal else n - 1
            keep[b, 0, i, : max(0, min(n, last + 1))] = True
    return keep


def autograd_grouped(inputs, keep):
    """Written directly in torch float64, differentiated by autograd: K and V repeated over each
    group of query heads (repeat_interleave, whose gradient sums over the group), the mask
    `keep` as given, and a query that keeps no key giving 0."""
    q, k, v = (torch.tensor(inputs[n], requires_grad=True) for n in "qkv")
    group = q.shape[1] // k.shape[1]
    kk, vv = (x.repeat_interleave(group, dim=1) for x in (k, v))
    keep = torch.tensor(keep)
    any_kept = keep.any(-1, keepdim=True)
    s = (q @ kk.transpose(-1, -2) / math.sqrt(q.shape[-1])).masked_fill(~keep, -math.inf)
    p = torch.softmax(s.masked_fill(~any_kept, 0.0), -1) * any_kept
    out = p @ vv
    grads = torch.autograd.grad(out, (q, k, v), torch.tensor(inputs["dout"]))
    return out.detach().numpy(), dict(zip("qkv", (g.numpy() for g in grads)))


GROUPED = [  # heads, kv_heads, nq, nk, causal, align, padding
    (8, 2, 9, 13, False, TOP_LEFT, 0.0),
    (8, 1, 9, 13, True, TOP_LEFT, 0.0),
    (8, 2, 3, 17, True, BOTTOM_RIGHT, 0.0),
    (8, 1, 1, 17, True, BOTTOM_RIGHT, 0.0),
    (4, 2, 7, 4, True, BOTTOM_RIGHT, 0.0),  # the first 3 queries keep no key
    (4, 4, 3, 17, True, BOTTOM_RIGHT, 0.0),
    (4, 2, 6, 11, True, BOTTOM_RIGHT, 0.7),  # aligned to each sequence's real keys
    (4, 2, 6, 11, True, TOP_LEFT, 0.5),
]


@pytest.mark.parametrize("heads, kv_heads, nq, nk, causal, align, padding", GROUPED)
def test_grouped_and_aligned_reference_gradients_equal_torch_autograd(
        monkeypatch, heads, kv_heads, nq, nk, causal, align, padding):
    monkeypatch.setattr(reference, "ROW_CHUNK", 2)
    case = Case(impl="numpy", batch=3, heads=heads, kv_heads=kv_heads, seq_len=nq,
                seq_len_kv=nk, head_dim=8, causal=causal, causal_align=align, padding=padding)
    inputs = kernel_inputs(case)
    inputs["dout"] = grad_output(case, (3, heads, nq, 8))
    out, grads = kernel_forward_backward(case, inputs)
    keep = keep_by_definition(nq, nk, causal, align, key_valid_lengths(case), 3)
    want_out, want = autograd_grouped(inputs, keep)
    assert np.abs(out - want_out).max() < 1e-13
    assert grads["k"].shape == grads["v"].shape == (3, kv_heads, nk, 8)
    assert grads["q"].shape == (3, heads, nq, 8)
    for name in "qkv":
        assert np.isfinite(grads[name]).all()
        assert np.abs(grads[name] - want[name]).max() < 1e-12, name
    empty = ~keep.any(-1)[:, 0]  # (B, Nq): queries that keep no key pass no gradient
    assert not grads["q"].transpose(0, 2, 1, 3)[empty].any()


def test_grouped_k_and_v_gradients_are_the_per_query_head_ones_summed_over_each_group():
    case = Case(impl="numpy", batch=2, heads=6, kv_heads=2, seq_len=5, seq_len_kv=9,
                head_dim=8, causal=True, causal_align=BOTTOM_RIGHT)
    x = kernel_inputs(case)
    dout = grad_output(case, (2, 6, 5, 8))
    out = reference.naive_attention(x["q"], x["k"], x["v"], True, align=BOTTOM_RIGHT)
    _, dk, dv = attention_backward(x["q"], x["k"], x["v"], out, dout, True, align=BOTTOM_RIGHT)
    wide = {n: np.repeat(x[n], 3, axis=1) for n in "kv"}  # each K/V head serving 3 query heads
    _, dk_wide, dv_wide = attention_backward(x["q"], wide["k"], wide["v"], out, dout, True,
                                             align=BOTTOM_RIGHT)
    assert dk_wide.shape == (2, 6, 9, 8)
    assert np.abs(dk - dk_wide.reshape(2, 2, 3, 9, 8).sum(2)).max() < 1e-13
    assert np.abs(dv - dv_wide.reshape(2, 2, 3, 9, 8).sum(2)).max() < 1e-13


def test_grouped_reference_equals_torch_sdpa_with_enable_gqa():
    case = Case(impl="numpy", batch=2, heads=8, kv_heads=2, seq_len=12, head_dim=16, causal=True)
    inputs = kernel_inputs(case)
    inputs["dout"] = grad_output(case, (2, 8, 12, 16))
    out, grads = kernel_forward_backward(case, inputs)
    q, k, v = (torch.tensor(inputs[n], requires_grad=True) for n in "qkv")
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                            enable_gqa=True)
    wants = torch.autograd.grad(want, (q, k, v), torch.tensor(inputs["dout"]))
    assert np.abs(out - want.detach().numpy()).max() < 1e-13
    for name, w in zip("qkv", wants):
        assert np.abs(grads[name] - w.numpy()).max() < 1e-12, name


def test_a_grouped_bottom_right_fwd_bwd_truth_has_tolerances_for_every_gradient():
    truth.clear_caches()
    case = Case(impl="numpy", mode="fwd_bwd", dtype="bfloat16", batch=2, heads=8, kv_heads=2,
                seq_len=3, seq_len_kv=17, head_dim=16, causal=True, causal_align=BOTTOM_RIGHT)
    grads, tols = truth.reference_grads(case), truth.grad_tolerances_for(case)
    assert grads["k"].shape == grads["v"].shape == (2, 2, 17, 16)
    assert set(tols) == {"q", "k", "v"} and all(np.isfinite(list(tols.values())))
    inputs, _ = truth.problem(case)
    _, naive = kernel_forward_backward(case, inputs, "bfloat16")
    for name, g in grads.items():
        floor = reference.ABS_FLOOR["bfloat16"] * max(1.0, np.abs(g).max())
        assert tols[name] == pytest.approx(max(floor, 4 * np.abs(naive[name] - g).max()))
    truth.clear_caches()
