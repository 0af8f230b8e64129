"""Adapter contract tests: every kernel adapter computes softmax(Q Kᵀ/√d + mask) V within the
tolerance, in the case's dtype, or says (in one readable line) why it cannot.

Cases go through `harness.execute.run_case`, the path a worker takes, on ordinary and odd
shapes, causal and not, with grouped K/V heads and a bottom-right causal mask. TensorFlow never
enters this process (it imports torch): the TF and Keras adapters run in a child process
(tests/tf_cases_worker.py) and report JSON back; so do JAX and Keras on JAX or torch.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness import registry
from harness.case import BOTTOM_RIGHT, TOP_LEFT
from harness.constants import FEATURES
from harness.run.execute import execute, run_case
from harness.problem.inputs import causal_keep, kernel_inputs
from harness.spec import DTYPES, Case
from harness.spec import TimingSettings
from impls.base import case_features
from impls.numpy_ref import NumpyAttention
from layer_cases import (FAMILY_KERNELS, assert_ok, child_env, family_kernel_cases, family_run,
                         require_family, run_tf_cases)

ROOT = Path(__file__).resolve().parent.parent
FAST = TimingSettings(warmup_s=0.001, min_samples=2, max_samples=3, budget_s=0.01)
CONTRACT_DTYPES = ("float64", "float32", "bfloat16")
# (batch, heads, seq_len, seq_len_kv, head_dim): ordinary, odd, one token, Nq < Nk, Nq > Nk
SHAPES = [(2, 4, 64, 64, 32), (1, 3, 77, 77, 40), (1, 2, 1, 1, 16),
          (1, 2, 33, 50, 24), (1, 2, 50, 33, 24)]
ALL_CONTRACT = set(CONTRACT_DTYPES)
# What each built-in adapter must run on this CPU; any other contract dtype must be "unsupported".
CPU_OK = {
    "numpy": {"float64", "float32"},
    "torch.naive": ALL_CONTRACT,
    "torch.sdpa": ALL_CONTRACT,
    "torch.sdpa.math": ALL_CONTRACT,
    "torch.sdpa.flash": ALL_CONTRACT,
    "torch.sdpa.efficient": set(),  # no CPU kernel in torch
    "torch.sdpa.cudnn": set(),  # cuDNN is CUDA only
    "xformers": set(),  # CUDA only (or not installed)
    "tf.naive": ALL_CONTRACT,
    "tf.naive.graph": ALL_CONTRACT,
    "tf.naive.xla": ALL_CONTRACT,
    "keras.ops": ALL_CONTRACT,
    "torch.compile.naive": ALL_CONTRACT,
    "torch.compile.sdpa": ALL_CONTRACT,
    "torch.flex": {"float32", "bfloat16"},  # inductor's CPU flex lowering takes no float64
    "jax.naive": ALL_CONTRACT,
    "jax.sdpa": {"float32", "bfloat16"},  # its softmax is float32
    "keras.ops.jax": {"float32", "bfloat16"},  # Keras computes float64 in float32 here
    "keras.ops.torch": {"float32", "bfloat16"},
}
TF_FRAMEWORK = "tensorflow"
IN_PROCESS = ("numpy", "torch")  # the families this (torch-importing) process may run
# Each torch.compile case compiles (seconds here): these run on fewer cases, in float32, plus
# the dtypes they refuse (no compilation). (shape index into SHAPES, causal)
COMPILED = {"torch.compile.naive": [(1, False), (1, True), (2, True)],
            "torch.compile.sdpa": [(0, False), (1, False), (1, True), (2, True), (3, True)],
            "torch.flex": [(1, True), (2, False)],
            "tf.naive.graph": [(0, False), (1, True), (2, True), (3, True)],
            "tf.naive.xla": [(0, False), (1, True), (2, True), (3, True)]}
HAVE_TF = all(importlib.util.find_spec(m) is not None for m in ("tensorflow", "keras"))
# Grouped K/V heads and a bottom-right causal mask: (batch, heads, kv_heads, seq_len,
# seq_len_kv, head_dim, causal, causal_align): 4 query heads on 2 K/V heads (causal) and on 1
# (multi-query); bottom-right, a prefill chunk (3 queries on 17 keys) and a grouped decode step
# (1 query on 33 keys). The compiled adapters take the last (both features at once).
FEATURE_SHAPES = [(2, 4, 2, 16, 16, 16, True, TOP_LEFT), (1, 4, 1, 16, 16, 16, False, TOP_LEFT),
                  (1, 2, 2, 3, 17, 24, True, BOTTOM_RIGHT), (1, 4, 2, 1, 33, 16, True, BOTTOM_RIGHT)]
# Cases a library refuses on this CPU, though the adapter takes the feature: Keras 3.15 on
# TensorFlow repeats K/V heads only when there are more than one (multi-query fails its einsum)
LIBRARY_REFUSES = {"keras.ops": lambda case: case.kv_heads == 1 < case.heads}


def kernel_adapters(in_tf_process: bool) -> list[str]:
    """Registered kernel adapters of this process's families (numpy, torch; compiled ones
    apart), or of TensorFlow's."""
    adapters = registry.adapters()
    if in_tf_process:
        return sorted(n for n, a in adapters.items()
                      if a.level == "kernel" and a.framework == TF_FRAMEWORK and n not in COMPILED)
    return sorted(n for n, a in adapters.items() if a.level == "kernel"
                  and a.framework in IN_PROCESS and n not in COMPILED)


def contract_cases(names) -> list[Case]:
    return [Case(impl=name, dtype=dtype, batch=b, heads=h, seq_len=n, seq_len_kv=nk,
                 head_dim=d, causal=causal)
            for (b, h, n, nk, d) in SHAPES for causal in (False, True)
            for name in names for dtype in CONTRACT_DTYPES]


def feature_cases(names, picks=None, dtypes=CONTRACT_DTYPES) -> list[Case]:
    """FEATURE_SHAPES (those indexed by `picks`, default all) for each adapter and dtype."""
    shapes = FEATURE_SHAPES if picks is None else [FEATURE_SHAPES[i] for i in picks]
    return [Case(impl=name, dtype=dtype, batch=b, heads=h, kv_heads=kv, seq_len=n, seq_len_kv=nk,
                 head_dim=d, causal=causal, causal_align=align)
            for (b, h, kv, n, nk, d, causal, align) in shapes
            for name in names for dtype in dtypes]


def compiled_feature_cases(family: str = "torch") -> list[Case]:
    return feature_cases([n for n in COMPILED if registry.get(n).framework == family],
                         picks=[len(FEATURE_SHAPES) - 1], dtypes=("float32",))


def compiled_cases(family: str = "torch") -> list[Case]:
    out = []
    for name, picks in COMPILED.items():
        if registry.get(name).framework != family:
            continue
        refused = sorted(ALL_CONTRACT - CPU_OK[name])
        for i, causal in picks:
            b, h, n, nk, d = SHAPES[i]
            out += [Case(impl=name, dtype=dtype, batch=b, heads=h, seq_len=n, seq_len_kv=nk,
                         head_dim=d, causal=causal) for dtype in ["float32", *refused]]
    return out


def expected_ok(case: Case, adapter) -> bool:
    refused = LIBRARY_REFUSES.get(case.impl)
    if case_features(case) - adapter.features or (refused and refused(case)):
        return False
    if case.impl in CPU_OK:
        return case.dtype in CPU_OK[case.impl]
    # A plugin: hold it to its own declarations (only the static ones for TF: not in this process)
    check = adapter.static_reasons if adapter.framework == TF_FRAMEWORK else adapter.unsupported
    return not check(case)


def check_contract(case: Case, result: dict, expect_ok: bool) -> None:
    if not expect_ok:
        assert result["status"] == "unsupported", result
        assert isinstance(result["reason"], str) and result["reason"].strip()
        assert "\n" not in result["reason"]
        return
    assert result["status"] == "ok", f"{case.case_id}: {result['status']}: {result.get('reason')}"
    assert result["out_dtype"] == case.dtype
    assert math.isfinite(result["max_abs_err"])
    assert 0.0 <= result["max_abs_err"] <= result["tolerance"]
    assert result["n_samples"] >= FAST.min_samples


# --- declarations -------------------------------------------------------------------------

def test_builtin_adapters_are_registered_with_stable_ids():
    assert set(CPU_OK) <= set(registry.adapters())


@pytest.mark.parametrize("name", sorted(CPU_OK))
def test_declarations(name):
    adapter = registry.get(name)
    assert adapter.name == name
    assert adapter.level == "kernel"
    assert adapter.framework in ("numpy", "torch", TF_FRAMEWORK, "jax", "keras-jax",
                                 "keras-torch")
    assert adapter.description.strip() and "\n" not in adapter.description
    assert adapter.requires and adapter.install_hint.startswith("pip install")
    assert set(adapter.dtypes) <= set(DTYPES) and "cpu" in adapter.devices
    assert {"kv_heads", "bottom_right"} <= adapter.features <= set(FEATURES)  # every kernel
    if adapter.framework == TF_FRAMEWORK:
        assert "attnbench[tf]" in adapter.install_hint
    if "jax" in adapter.framework:
        assert "jax" in adapter.install_hint


@pytest.mark.parametrize("name", sorted(CPU_OK))
def test_missing_package_gives_install_hint(name):
    adapter = registry.get(name)
    cls = type(adapter)
    missing = type("Missing", (cls,), {"requires": cls.requires + ("attnbench_no_such_module",)})
    clone = missing.__new__(missing)
    clone.__dict__.update(adapter.__dict__)
    case = Case(impl=name, dtype=adapter.dtypes[0])
    reasons = clone.unsupported(case)
    assert any("attnbench_no_such_module" in r and adapter.install_hint in r for r in reasons)


def test_adapter_modules_import_no_framework():
    """`attnbench list` must work with only the base install: no framework at import time."""
    code = ("import sys; from harness import registry; names = sorted(registry.adapters()); "
            "heavy = [m for m in ('torch', 'tensorflow', 'keras', 'xformers') if m in sys.modules]; "
            "print(len(names), heavy)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, env=child_env())
    assert out.returncode == 0, out.stderr
    count, heavy = out.stdout.split(" ", 1)
    assert int(count) >= len(CPU_OK)
    assert heavy.strip() == "[]"


# --- the contract, in this process (NumPy and torch families) -----------------------------

@pytest.mark.parametrize("case", contract_cases(kernel_adapters(in_tf_process=False))
                         + feature_cases(kernel_adapters(in_tf_process=False))
                         + compiled_cases() + compiled_feature_cases(), ids=lambda c: c.case_id)
def test_contract(case):
    adapter = registry.get(case.impl)
    check_contract(case, run_case(case, adapter, FAST), expected_ok(case, adapter))


def test_numpy_adapter_matches_row_by_row_formula():
    """Independent of harness.problem.reference: each query row, its visible keys, a softmax, a sum."""
    for nq, nk in ((5, 7), (7, 5)):
        case = Case(impl="numpy", dtype="float64", batch=1, heads=2, seq_len=nq, seq_len_kv=nk,
                    head_dim=8, causal=True)
        inputs = kernel_inputs(case)
        prepared = NumpyAttention().prepare(case, inputs)
        got = prepared.to_numpy(prepared.call())
        q, k, v = inputs["q"][0], inputs["k"][0], inputs["v"][0]
        for h in range(2):
            for i in range(nq):
                keys = slice(0, min(i + 1, nk))  # top-left aligned: query i sees keys j <= i
                s = k[h, keys] @ q[h, i] / math.sqrt(8)
                w = np.exp(s - s.max())
                np.testing.assert_allclose(got[0, h, i], (w / w.sum()) @ v[h, keys], rtol=1e-12)


def test_numpy_float32_stays_float32():
    case = Case(impl="numpy", dtype="float32", heads=2, seq_len=16, head_dim=8, causal=True)
    prepared = NumpyAttention().prepare(case, kernel_inputs(case))
    out = prepared.call()
    assert out.dtype == np.float32 and prepared.out_dtype(out) == "float32"


def test_numpy_bfloat16_is_unsupported():
    result = run_case(Case(impl="numpy", dtype="bfloat16"), registry.get("numpy"), FAST)
    assert result["status"] == "unsupported" and "bfloat16" in result["reason"]


# --- what libraries say when they cannot run a case ---------------------------------------

@pytest.mark.parametrize("name", ["torch.sdpa.efficient", "torch.sdpa.cudnn"])
def test_fused_sdpa_backends_say_why_on_cpu(name):
    case = Case(impl=name, dtype="float16", heads=2, seq_len=32, head_dim=64)
    result = run_case(case, registry.get(name), FAST)
    assert result["status"] == "unsupported"
    backend = name.rsplit(".", 1)[1].upper()
    assert result["reason"].startswith(f"torch has no SDPBackend.{backend}")
    assert "on cpu: No viable backend" in result["reason"]


def test_xformers_on_cpu_says_why():
    case = Case(impl="xformers", dtype="float16", heads=2, seq_len=32, head_dim=64, causal=True)
    result = run_case(case, registry.get("xformers"), FAST)
    assert result["status"] == "unsupported"
    reason = result["reason"]
    assert "\n" not in reason
    if importlib.util.find_spec("xformers") is None:
        assert "pip install" in reason
    else:
        assert reason.startswith("xformers says:")
        assert "cpu" in reason.lower() and "cuda" in reason.lower()


def test_xformers_message_condensed_to_one_line():
    from impls.xformers_fmha import condense

    message = ("No operator found for `memory_efficient_attention_forward` with inputs:\n"
               "     query       : shape=(1, 5, 1, 40) (torch.float32)\n"
               "`fa2F@2.5` is not supported because:\n"
               "    device=cpu (supported: {'cuda'})\n"
               "`cutlassF` is not supported because:\n"
               "    device=cpu (supported: {'cuda'})\n"
               "    operator wasn't built\n")
    assert condense(message) == (
        "`fa2F@2.5` is not supported because: device=cpu (supported: {'cuda'}); "
        "`cutlassF` is not supported because: device=cpu (supported: {'cuda'}), "
        "operator wasn't built")
    assert condense("something else\nentirely") == "something else entirely"


@pytest.mark.parametrize("name", ["torch.naive", "torch.sdpa", "torch.sdpa.flash", "xformers"])
def test_cuda_case_without_cuda_is_unsupported(name):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    case = Case(impl=name, device="cuda", dtype="float16", heads=2, seq_len=16, head_dim=64)
    result = run_case(case, registry.get(name), FAST)
    assert result["status"] == "unsupported"
    assert "CUDA" in result["reason"] or "pip install" in result["reason"]


# --- the backend context: entered in prepare, left in close -------------------------------

def test_pinned_sdpa_backend_lives_from_prepare_to_close():
    torch = pytest.importorskip("torch")
    flags = torch.backends.cuda
    assert flags.flash_sdp_enabled() and flags.math_sdp_enabled()
    case = Case(impl="torch.sdpa.math", heads=2, seq_len=8, head_dim=16)
    prepared = registry.get("torch.sdpa.math").prepare(case, kernel_inputs(case))
    try:
        assert prepared.kernel == "math"
        assert flags.math_sdp_enabled() and not flags.flash_sdp_enabled()
        prepared.call()  # the timed call runs inside the context prepare entered
        assert not flags.flash_sdp_enabled()
    finally:
        prepared.close()
    assert flags.flash_sdp_enabled() and flags.math_sdp_enabled()


def test_pinned_backend_applies_to_the_call():
    """Pinned to a backend with no CPU kernel, the call itself fails until close."""
    torch = pytest.importorskip("torch")
    case = Case(impl="torch.sdpa.efficient", heads=2, seq_len=8, head_dim=16)
    inputs = kernel_inputs(case)
    prepared = registry.get("torch.sdpa.efficient").prepare(case, inputs)
    try:
        assert prepared.kernel == "efficient_attention"
        with pytest.raises(RuntimeError, match="No viable backend"):
            prepared.call()
    finally:
        prepared.close()
    q = torch.from_numpy(inputs["q"])
    torch.nn.functional.scaled_dot_product_attention(q, q, q)  # unpinned again


def test_dispatcher_sdpa_pins_nothing():
    torch = pytest.importorskip("torch")
    case = Case(impl="torch.sdpa", heads=2, seq_len=8, head_dim=16)
    prepared = registry.get("torch.sdpa").prepare(case, kernel_inputs(case))
    try:
        assert prepared.kernel is None
        assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.math_sdp_enabled()
    finally:
        prepared.close()


# --- deliberately wrong adapters are caught -----------------------------------------------

class NoScale(NumpyAttention):
    """Forgets 1/√d (the same as scaling q by √d)."""
    name = "test.wrong.no_scale"

    def prepare(self, case, inputs):
        return super().prepare(case, {**inputs, "q": inputs["q"] * math.sqrt(case.head_dim)})


class HeadsReversed(NumpyAttention):
    """Returns the heads in the wrong order (a transposed head axis, same shape)."""
    name = "test.wrong.heads_reversed"

    def prepare(self, case, inputs):
        prepared = super().prepare(case, inputs)
        call = prepared.call
        return dataclasses.replace(prepared, call=lambda: call()[:, ::-1])


class IgnoresCausal(NumpyAttention):
    """Drops the causal mask."""
    name = "test.wrong.ignores_causal"

    def prepare(self, case, inputs):
        return super().prepare(dataclasses.replace(case, causal=False), inputs)


class Float64Out(NumpyAttention):
    """Computes (and returns) float64 for a float32 case: accurate, but not what was asked."""
    name = "test.wrong.float64_out"

    def prepare(self, case, inputs):
        return super().prepare(dataclasses.replace(case, dtype="float64"), inputs)


class SeqHeadsSwapped(NumpyAttention):
    """Returns (B, N, H, D): a layout left unconverted."""
    name = "test.wrong.layout"

    def prepare(self, case, inputs):
        prepared = super().prepare(case, inputs)
        call = prepared.call
        return dataclasses.replace(prepared, call=lambda: np.swapaxes(call(), 1, 2))


@pytest.fixture
def scratch_registry(monkeypatch):
    """Register test adapters without leaving them behind for other tests."""
    registry.adapters()  # load the built-ins into the real registry first
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


@pytest.mark.parametrize("wrong, dtype, causal, says", [
    (NoScale, "float32", False, "max_abs_err"),
    (NoScale, "float64", True, "max_abs_err"),
    (HeadsReversed, "float32", True, "max_abs_err"),
    (IgnoresCausal, "float32", True, "max_abs_err"),
    (Float64Out, "float32", False, "dtype float64, expected float32"),
    (SeqHeadsSwapped, "float32", False, "shape"),
], ids=lambda p: getattr(p, "name", None))
def test_wrong_adapter_is_caught(scratch_registry, wrong, dtype, causal, says):
    registry.register(wrong())
    case = Case(impl=wrong.name, dtype=dtype, batch=2, heads=4, seq_len=33, seq_len_kv=40,
                head_dim=32, causal=causal)
    result = run_case(case, registry.get(wrong.name), FAST)
    assert result["status"] == "mismatch" and says in result["reason"], result
    control = run_case(dataclasses.replace(case, impl="numpy"), registry.get("numpy"), FAST)
    assert control["status"] == "ok", control  # the bug, not the case, made the difference


# --- TensorFlow and Keras, in a child process ---------------------------------------------

TF_CASES = (contract_cases(kernel_adapters(in_tf_process=True)) + compiled_cases(TF_FRAMEWORK)
            + feature_cases(kernel_adapters(in_tf_process=True))
            + compiled_feature_cases(TF_FRAMEWORK))
needs_tf = pytest.mark.skipif(not HAVE_TF, reason="tensorflow and keras not installed "
                                                   "(pip install 'attnbench[tf]')")


@pytest.fixture(scope="module")
def tf_run():
    """One child process runs every TF/Keras case through the worker's whole path; its
    records, keyed by case id."""
    return run_tf_cases(TF_CASES, timeout=360, full=TF_CASES)


@pytest.mark.tf
@needs_tf
def test_tf_worker_keeps_torch_out(tf_run):
    assert tf_run["tensorflow_imported"] and not tf_run["torch_imported"]
    assert "tensorflow" not in sys.modules  # nor did TensorFlow get into this process


@pytest.mark.tf
@needs_tf
@pytest.mark.parametrize("case", TF_CASES, ids=lambda c: c.case_id)
def test_tf_contract(tf_run, case):
    check_contract(case, tf_run["records"][case.case_id],
                   expected_ok(case, registry.get(case.impl)))


# --- JAX and Keras on JAX / torch, each family in a child process of its own ----------------

FAMILY_CASES = [(family, case) for family in FAMILY_KERNELS
                for case in family_kernel_cases(family, "fwd")]


@pytest.mark.parametrize("family", sorted(FAMILY_KERNELS))
def test_family_child_keeps_the_other_frameworks_out(family):
    require_family(family)
    run = family_run(family)
    assert not run["tensorflow_imported"]
    if family == "keras-torch":
        assert run["torch_imported"]  # Keras imports jax when it is installed, never runs it
    else:
        assert run["jax_imported"] and not run["torch_imported"]


@pytest.mark.parametrize("family, case", FAMILY_CASES, ids=lambda p: getattr(p, "case_id", p))
def test_family_contract(family, case):
    require_family(family)
    result = family_run(family)["records"][case.case_id]
    if expected_ok(case, registry.get(case.impl)):
        assert_ok(case, result)
    else:
        assert result["status"] == "unsupported" and "\n" not in result["reason"], result


@pytest.mark.parametrize("family, case", [(f, c) for f, names in FAMILY_KERNELS.items()
                                          for c in feature_cases(names, dtypes=("float32",))],
                         ids=lambda p: getattr(p, "case_id", p))
def test_family_feature_contract(family, case):
    """Grouped K/V heads and bottom-right masks on JAX and Keras on JAX / torch (float32)."""
    require_family(family)
    result = family_feature_run(family)["records"][case.case_id]
    if expected_ok(case, registry.get(case.impl)):
        assert_ok(case, result)
    else:
        assert result["status"] == "unsupported" and "\n" not in result["reason"], result


@functools.cache
def family_feature_run(family: str) -> dict:
    names = FAMILY_KERNELS[family]
    return run_tf_cases(feature_cases(names, dtypes=("float32",)), timeout=300, family=family)


# --- grouped K/V heads and bottom-right causal: what the harness and the adapters say -------

class Featureless(NumpyAttention):
    name = "test.featureless"
    features = frozenset()


@pytest.mark.parametrize("fields, says", [
    ({"heads": 8, "kv_heads": 2},
     "test.featureless takes no grouped K/V heads (kv_heads 2 of heads 8)"),
    ({"seq_len": 1, "seq_len_kv": 4096, "causal": True, "causal_align": BOTTOM_RIGHT},
     "test.featureless cannot align a causal mask bottom-right (seq_len 1, seq_len_kv 4096)"),
    ({"padding": 0.25}, "test.featureless takes no key-padding mask (padding 0.25)"),
])
def test_a_feature_not_declared_is_a_reason(fields, says):
    case = Case(impl=Featureless.name, **fields)
    assert Featureless().static_reasons(case) == [says]
    assert not NumpyAttention().static_reasons(dataclasses.replace(case, impl="numpy",
                                                                   padding=0.0))


def test_an_unknown_feature_fails_at_declaration():
    with pytest.raises(TypeError, match="unknown features.*windowed"):
        type("Windowed", (NumpyAttention,), {"features": frozenset({"windowed"})})


def test_square_and_full_cases_need_no_alignment():
    """Case keeps bottom_right only where it differs from top-left: causal and rectangular."""
    assert not case_features(Case(impl="x", seq_len=8, causal=True, causal_align=BOTTOM_RIGHT))
    assert not case_features(Case(impl="x", seq_len=2, seq_len_kv=8, causal_align=BOTTOM_RIGHT))


@pytest.mark.parametrize("wrong, fields", [
    ("test.wrong.top_left_causal", {"heads": 4, "kv_heads": 2, "seq_len": 3, "seq_len_kv": 17,
                                    "causal": True, "causal_align": BOTTOM_RIGHT}),
    ("test.wrong.top_left_causal", {"heads": 2, "seq_len": 1, "seq_len_kv": 33, "causal": True,
                                    "causal_align": BOTTOM_RIGHT}),
    ("test.wrong.kv_heads_modulo", {"heads": 4, "kv_heads": 2, "seq_len": 16}),
    ("test.wrong.kv_heads_modulo", {"heads": 6, "kv_heads": 2, "seq_len": 9, "seq_len_kv": 20,
                                    "causal": True, "causal_align": BOTTOM_RIGHT}),
])
def test_wrong_grouping_or_alignment_is_a_mismatch(scratch_registry, wrong, fields):
    """Adapters that declare the feature and get it wrong (tests/plugins/wrong_kernels.py) are
    caught by the harness's own path, with the reference grouped and aligned."""
    from tests.plugins import wrong_kernels

    for adapter in wrong_kernels.ADAPTERS:
        registry.register(adapter)
    case = Case(impl=wrong, dtype="float32", batch=2, head_dim=16, **fields)
    result = execute(case, registry.get(wrong), FAST)
    assert result["status"] == "mismatch" and "max_abs_err" in result["reason"], result
    control = execute(dataclasses.replace(case, impl="numpy"), registry.get("numpy"), FAST)
    assert control["status"] == "ok", control


def test_grouped_sdpa_records_the_backend_that_ran():
    """The kernel field is the profiler's: the math backend, pinned, repeats K/V itself; the
    dispatcher's CPU flash kernel takes them grouped. Neither is relabelled."""
    for name, ran in (("torch.sdpa.math", "math"), ("torch.sdpa", "flash_attention")):
        case = Case(impl=name, heads=4, kv_heads=1, seq_len=3, seq_len_kv=17, head_dim=16,
                    causal=True, causal_align=BOTTOM_RIGHT)
        result = run_case(case, registry.get(name), FAST)
        assert result["status"] == "ok" and result["kernel"] == ran, result
    from harness.measure.kernels import name_kernel

    # causal_lower_right on CUDA calls the memory-efficient operator without SDPA's wrapper
    assert name_kernel("sdpa", ["aten::_efficient_attention_forward"]) == "efficient_attention"


def test_sdpa_options_follow_the_case():
    torch = pytest.importorskip("torch")
    from impls._torch import sdpa_options

    def options(**fields):
        case = Case(impl="torch.sdpa", heads=4, head_dim=8, **fields)
        q, k, v = (torch.from_numpy(x).float() for x in kernel_inputs(case).values())
        return sdpa_options(case, q, k, v)

    assert options(seq_len=5) == {}
    assert options(seq_len=5, causal=True) == {"is_causal": True}
    assert options(seq_len=5, kv_heads=2) == {"enable_gqa": True}
    got = options(seq_len=3, seq_len_kv=7, kv_heads=1, causal=True, causal_align=BOTTOM_RIGHT)
    assert got.keys() == {"enable_gqa", "attn_mask"}  # on the CPU, the mask built once
    assert got["attn_mask"].dtype == torch.bool
    assert np.array_equal(got["attn_mask"].numpy(), causal_keep(3, 7, BOTTOM_RIGHT))


# --- each library's own is_causal alignment, pinned (never assumed) --------------------------

ALIGN_NQ, ALIGN_NK = 3, 5


def align_inputs() -> list[np.ndarray]:
    """q (1, 2, Nq, 8), k, v (1, 2, Nk, 8), float32 values, in (B, H, N, D)."""
    rng = np.random.default_rng(7)
    return [rng.standard_normal((1, 2, n, 8)).astype(np.float32)
            for n in (ALIGN_NQ, ALIGN_NK, ALIGN_NK)]


def alignment_of(out: np.ndarray) -> str:
    """Which causal alignment `out` (B, H, Nq, D) computed, against both written out here."""
    q, k, v = (x.astype(np.float64) for x in align_inputs())
    found = []
    for align, offset in ((TOP_LEFT, 0), (BOTTOM_RIGHT, ALIGN_NK - ALIGN_NQ)):
        keep = np.arange(ALIGN_NK)[None, :] <= np.arange(ALIGN_NQ)[:, None] + offset
        scores = np.where(keep, q @ np.swapaxes(k, -1, -2) / math.sqrt(8), -np.inf)
        weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
        expected = (weights / weights.sum(axis=-1, keepdims=True)) @ v
        if np.allclose(out, expected, atol=1e-5):
            found.append(align)
    assert len(found) == 1, f"neither alignment or both: {found}"
    return found[0]


def test_torch_sdpa_is_causal_is_top_left_and_causal_lower_right_bottom_right():
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    from torch.nn.attention.bias import causal_lower_right

    q, k, v = (torch.from_numpy(x) for x in align_inputs())
    assert alignment_of(F.scaled_dot_product_attention(q, k, v, is_causal=True).numpy()) == TOP_LEFT
    lower_right = causal_lower_right(ALIGN_NQ, ALIGN_NK)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=lower_right)
    assert alignment_of(out.numpy()) == BOTTOM_RIGHT


def test_flex_attention_has_no_causal_flag():
    """Its alignment is the mask_mod's (impls.torch_compiled.causal_mod), never a flag's."""
    import inspect

    pytest.importorskip("torch")
    from torch.nn.attention.flex_attention import flex_attention

    assert "is_causal" not in inspect.signature(flex_attention).parameters


ALIGN_CHILD = """
import json, sys
import numpy as np
q, k, v = (np.asarray(x, dtype=np.float32).transpose(0, 2, 1, 3) for x in json.load(sys.stdin))
import keras
outs = {"keras.ops.dot_product_attention": keras.ops.convert_to_numpy(
    keras.ops.dot_product_attention(q, k, v, is_causal=True))}
if keras.backend.backend() == "jax":
    import jax
    outs["jax.nn.dot_product_attention"] = jax.nn.dot_product_attention(q, k, v, is_causal=True)
print("RESULT " + json.dumps({n: np.asarray(o, dtype=np.float64).transpose(0, 2, 1, 3).tolist()
                              for n, o in outs.items()}))
"""


@functools.cache
def library_outputs(family: str) -> dict:
    """is_causal=True outputs of the family's libraries on `align_inputs()`, from a child
    process of the family's own (its Keras backend), in (B, H, Nq, D)."""
    payload = json.dumps([x.tolist() for x in align_inputs()])
    proc = subprocess.run([sys.executable, "-c", ALIGN_CHILD], input=payload, capture_output=True,
                          text=True, cwd=ROOT, env=child_env(family=family), timeout=180)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return {n: np.array(o) for n, o in json.loads(lines[-1][len("RESULT "):]).items()}


@pytest.mark.parametrize("family, library", [
    ("keras-jax", "jax.nn.dot_product_attention"),
    ("keras-jax", "keras.ops.dot_product_attention"),
    ("keras-torch", "keras.ops.dot_product_attention"),
    pytest.param("tensorflow", "keras.ops.dot_product_attention", marks=[pytest.mark.tf, needs_tf]),
])
def test_library_is_causal_alignment(family, library):
    """jax.nn.dot_product_attention and keras.ops.dot_product_attention (on each backend) align
    is_causal top-left, so the adapters pass a bottom-right case an explicit mask."""
    if family != "tensorflow":
        require_family(family)
    assert alignment_of(library_outputs(family)[library]) == TOP_LEFT
