"""Layer levels (mha, encoder), forward: every framework's layer, loaded with the harness's
float64 weights, agrees with the float64 reference on ordinary and odd shapes (d_model 96 with
3 heads, one token), with causal and key-padding masks; wrong weight layouts are caught.

Gradients (fwd_bwd) are in tests/test_fwd_bwd.py. The Keras adapters run in a child process
(tests/tf_cases_worker.py): TensorFlow never shares a process with torch.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from harness.problem import layers

from harness import registry
from harness.run.execute import run_case
from harness.measure.flops import case_flops, forward_flops
from harness.problem.inputs import key_padding, key_valid_lengths
from harness.spec import Case
from layer_cases import (FAST, KERAS_BACKEND_LAYERS, KERAS_LAYERS, MASKS, SHAPES,
                         TORCH_LAYERS, assert_ok, family_layer_cases, family_run, layer_cases,
                         needs_tf, quick_check, require_family, run_tf_cases)

LAYER_IMPLS = {"torch.mha", "torch.mha.eval", "torch.mha.naive", "keras.mha", "torch.encoder",
               "torch.encoder.eval", "torch.encoder.naive", "keras.encoder",
               "torch.compile.encoder", "keras.mha.jax", "keras.mha.torch", "keras.encoder.jax",
               "keras.encoder.torch"}


# --- declarations and cases ---------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(LAYER_IMPLS))
def test_layer_adapters_are_registered_and_declared(name):
    adapter = registry.get(name)
    assert adapter.level == ("mha" if ".mha" in name else "encoder")
    family = {"jax": "keras-jax", "torch": "keras-torch"}.get(name.rsplit(".", 1)[1],
                                                              "tensorflow")
    assert adapter.framework == (family if name.startswith("keras") else "torch")
    assert adapter.description.strip() and "\n" not in adapter.description
    assert "padding" in adapter.features
    assert {"float64", "float32"} <= set(adapter.dtypes) or adapter.framework.startswith("keras-")
    assert ("fwd_bwd" in adapter.modes) == (not name.endswith(".eval"))


@pytest.mark.parametrize("name", [n for names in TORCH_LAYERS.values() for n in names])
def test_torch_weight_maps_fill_every_parameter_exactly_once(name):
    """Each reference weight lands somewhere, and every parameter element gets a value."""
    adapter = registry.get(name)
    case = Case(impl=name, level=adapter.level, heads=3, head_dim=8, seq_len=4)
    mapping = adapter.weight_map(case)
    assert sorted(ref for ref, *_ in mapping) == sorted(layers.weight_names(adapter.level))
    module = adapter.build(case, {"dtype": __import__("torch").float64}, labels=False)
    filled = {n: np.zeros(tuple(p.shape)) for n, p in module.named_parameters()}
    for _, param, rows, _ in mapping:
        target = filled[param] if rows is None else filled[param][rows]
        target += 1
    assert all(np.all(f == 1) for f in filled.values()), {n: f.mean() for n, f in filled.items()}


def test_new_case_fields_keep_old_ids_and_add_suffixes():
    base = Case(impl="torch.mha", level="mha", heads=3, head_dim=32, seq_len=23)
    assert base.case_id == "torch.mha/mha/fwd/cpu/float32/b1-h3-n23x23-d32/full/s0"
    assert base.d_model == 96
    padded = dataclasses.replace(base, padding=0.25)
    assert padded.case_id == base.case_id + "/pad0.25"
    assert padded.problem_key != base.problem_key
    pre = Case(impl="torch.encoder", level="encoder", norm="pre", ffn_mult=2)
    assert pre.case_id.endswith("/s0/prenorm/ffn2")
    assert Case.from_dict(pre.to_dict()) == pre
    # the kernel problem key (hence its seeded inputs) is unchanged by the new fields
    assert Case(impl="numpy").problem_key == ("kernel", 1, 8, 128, 128, 64, False, 0)


def test_key_padding_leaves_a_key_per_sequence_and_differs_across_the_batch():
    case = Case(impl="torch.mha", level="mha", batch=3, seq_len=10, padding=0.5)
    valid = key_valid_lengths(case)
    assert list(valid) == [5, 7, 8]
    assert key_padding(case).sum(axis=1).tolist() == [5, 3, 2]
    one = Case(impl="torch.mha", level="mha", batch=2, seq_len=1, padding=0.9)
    assert list(key_valid_lengths(one)) == [1, 1]
    assert key_valid_lengths(Case(impl="torch.mha", level="mha")) is None


def test_unsupported_combinations_say_why():
    naive = registry.get("torch.mha.naive")
    cross = Case(impl="torch.mha.naive", level="mha", seq_len=8, seq_len_kv=16)
    assert any("self-attention" in r for r in naive.unsupported(cross))
    pre_mha = Case(impl="torch.mha.naive", level="mha", norm="pre")
    assert any("encoder blocks" in r for r in naive.unsupported(pre_mha))
    capped = Case(impl="torch.sdpa", causal=True, softcap=30.0)
    assert any("soft-capping" in r for r in registry.get("torch.sdpa").unsupported(capped))


def test_layer_flops_count_projections_ffn_and_kept_scores():
    mha = Case(impl="torch.mha", level="mha", batch=2, heads=4, head_dim=16, seq_len=10)
    d = 64
    assert forward_flops(mha) == 4 * 16 * 100 * 2 * 4 + 8 * d * d * 2 * 10
    enc = dataclasses.replace(mha, level="encoder", impl="torch.encoder")
    assert forward_flops(enc) == forward_flops(mha) + 4 * d * 4 * d * 2 * 10
    both = dataclasses.replace(enc, mode="fwd_bwd")
    assert case_flops(both) == 3.5 * 4 * 16 * 100 * 2 * 4 + 3 * (8 * d * d + 16 * d * d) * 2 * 10
    padded = dataclasses.replace(mha, padding=0.5)  # 5 and 7 valid keys of 10
    assert forward_flops(padded) - forward_flops(mha) == -4 * 16 * 10 * (5 + 3) * 4


# --- forward against the float64 reference, torch ------------------------------------------

TORCH_FWD = (layer_cases(TORCH_LAYERS, "fwd", ("float64", "float32"))
             + layer_cases(TORCH_LAYERS, "fwd", ("bfloat16",), shapes=SHAPES[:2])
             + layer_cases({"encoder": TORCH_LAYERS["encoder"]}, "fwd", ("float64", "float32"),
                           shapes=SHAPES[1:2], masks=MASKS[1:2] + MASKS[3:], norms=("pre",)))


# torch.compile.encoder compiles each case (seconds here): the odd shape, causal and padded
TORCH_FWD += layer_cases({"encoder": ["torch.compile.encoder"]}, "fwd", ("float32",),
                         shapes=SHAPES[1:2], masks=MASKS[3:])


@pytest.mark.parametrize("case", TORCH_FWD, ids=lambda c: c.case_id)
def test_torch_layer_forward(case):
    assert_ok(case, quick_check(case, registry.get(case.impl)))


@pytest.mark.parametrize("name", ["torch.encoder", "torch.encoder.eval", "torch.mha",
                                  "torch.mha.eval", "torch.encoder.naive"])
def test_worker_path_records_the_kernel_that_ran(name):
    """Through run_case (timing, kernel and memory passes): eval mode takes torch's fused fast
    path with an even head count, and not with an odd one (torch: 'num_head is odd')."""
    adapter = registry.get(name)
    for heads, fast in ((4, True), (3, False)):
        case = Case(impl=name, level=adapter.level, heads=heads, head_dim=16, seq_len=12,
                    causal=True)
        result = run_case(case, adapter, FAST)
        assert result["status"] == "ok", result
        assert result["peak_mem_bytes"] is None or result["peak_mem_bytes"] > 0
        kernel = result["kernel"] or ""
        assert ("fast_path" in kernel) == (fast and name.endswith(".eval")), (heads, kernel)
        if name != "torch.encoder.naive" and "fast_path" not in kernel:
            assert kernel in ("flash_attention", "math"), kernel  # SDPA inside the module


# --- deliberately wrong layouts are caught -------------------------------------------------

@pytest.fixture
def scratch_registry(monkeypatch):
    registry.adapters()
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


@pytest.mark.parametrize("wrong", ["test.wrong.torch_mha_layout",
                                   "test.wrong.naive_mha_double_scaled"])
@pytest.mark.parametrize("mode", ["fwd", "fwd_bwd"])
def test_wrong_torch_layer_is_a_mismatch(scratch_registry, wrong, mode):
    from tests.plugins import wrong_layers

    for adapter in wrong_layers.ADAPTERS:
        registry.register(adapter)
    case = Case(impl=wrong, level="mha", mode=mode, dtype="float32", batch=2, heads=3,
                head_dim=32, seq_len=23, causal=True)
    result = run_case(case, registry.get(wrong), FAST)
    assert result["status"] == "mismatch" and "max_abs_err" in result["reason"], result
    control = quick_check(dataclasses.replace(case, impl="torch.mha"), registry.get("torch.mha"))
    assert control["status"] == "ok", control


# --- Keras, in a child process -------------------------------------------------------------

KERAS_FWD = (layer_cases(KERAS_LAYERS, "fwd", ("float64", "float32"))
             + layer_cases(KERAS_LAYERS, "fwd", ("bfloat16",), shapes=SHAPES[:2])
             + layer_cases({"encoder": KERAS_LAYERS["encoder"]}, "fwd", ("float32",),
                           shapes=SHAPES[1:2], masks=MASKS[3:], norms=("pre",)))
WRONG_KERAS = [Case(impl=name, level="mha", dtype="float32", batch=2, heads=3, head_dim=32,
                    seq_len=23) for name in ("test.wrong.keras_mha_layout",
                                             "test.wrong.keras_mha_heads")]


@pytest.fixture(scope="module")
def keras_run():
    return run_tf_cases(KERAS_FWD + WRONG_KERAS, plugins="tests.plugins.wrong_layers",
                        full=KERAS_FWD[:2] + WRONG_KERAS[:1])


@pytest.mark.tf
@needs_tf
def test_keras_child_keeps_torch_out(keras_run):
    assert keras_run["tensorflow_imported"] and not keras_run["torch_imported"]


@pytest.mark.tf
@needs_tf
@pytest.mark.parametrize("case", KERAS_FWD, ids=lambda c: c.case_id)
def test_keras_layer_forward(keras_run, case):
    assert_ok(case, keras_run["records"][case.case_id])


@pytest.mark.tf
@needs_tf
@pytest.mark.parametrize("case", WRONG_KERAS, ids=lambda c: c.impl)
def test_wrong_keras_layout_is_a_mismatch(keras_run, case):
    result = keras_run["records"][case.case_id]
    assert result["status"] == "mismatch" and "max_abs_err" in result["reason"], result


# --- Keras on JAX and on torch, a child process per backend --------------------------------

FAMILY_FWD = [(family, case) for family in sorted(KERAS_BACKEND_LAYERS)
              for case in family_layer_cases(family, "fwd")]


@pytest.mark.parametrize("family, case", FAMILY_FWD, ids=lambda p: getattr(p, "case_id", p))
def test_keras_backend_layer_forward(family, case):
    require_family(family)
    assert_ok(case, family_run(family)["records"][case.case_id])
