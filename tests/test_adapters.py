"""Adapter contract tests: every kernel adapter computes softmax(Q Kᵀ/√d + mask) V within the
tolerance, in the case's dtype, or says (in one readable line) why it cannot.

Cases go through `harness.execute.run_case`, the path a worker takes, on ordinary and odd
shapes, causal and not, with grouped K/V heads and a bottom-right causal mask, and with every
problem feature an adapter declares (key padding, ragged and packed batches, a window, ALiBi,
a bias, soft-capping: MOD_FIELDS). TensorFlow never enters this process (it imports torch): the
TF and Keras adapters run in a child process (tests/tf_cases_worker.py) and report JSON back;
so do JAX and Keras on JAX or torch.
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
from harness.case import BOTTOM_RIGHT, PACKED, TOP_LEFT
from harness.constants import FEATURE_PACKED, FEATURES
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
    "torch.sdpa.nested": ALL_CONTRACT,  # a packed batch only: its padded cases are refused
    "torch.varlen": set(),  # FlashAttention's varlen kernel: CUDA only
    "jax.naive": ALL_CONTRACT,
    "jax.sdpa": {"float32", "bfloat16"},  # its softmax is float32
    "keras.ops.jax": {"float32", "bfloat16"},  # Keras computes float64 in float32 here
    "keras.ops.torch": {"float32", "bfloat16"},
}
TF_FRAMEWORK = "tensorflow"
# features a kernel adapter takes or gives its library's reason for lacking (feature_notes);
# packed is a layout: the generic reason's "layout = padded" runs the same problem
NOTED_FEATURES = [f for f in FEATURES if f != FEATURE_PACKED]
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
# TensorFlow repeats K/V heads only when there are more than one (multi-query fails its einsum);
# torch's SDPA on nested tensors takes is_causal only in its CUDA kernels (one query per
# sequence at the bottom-right needs no mask)
LIBRARY_REFUSES = {"keras.ops": lambda case: case.kv_heads == 1 < case.heads,
                   "torch.sdpa.nested": lambda case: case.causal and not (
                       case.causal_align == BOTTOM_RIGHT and case.seq_len == 1)}
# Small cases of every optional problem feature (fields over MOD_BASE), each one that the
# feature changes: key padding; a ragged batch padded and packed (prefill documents; decode on
# ragged KV caches); a window of either alignment; ALiBi; a bias per head and per sequence; a
# soft cap. An adapter runs those whose features it declares and refuses the rest.
# (head_dim 32: torch 2.13's compiled CPU FlexAttention reads garbage now and then below 32,
# a mismatch the harness reports; the contract here is the adapters', not that bug's)
MOD_BASE = {"batch": 2, "heads": 4, "seq_len": 24, "head_dim": 32}
RECT = {"seq_len": 9, "seq_len_kv": 24, "causal": True}
DECODE = {"seq_len": 1, "seq_len_kv": 33, "lengths": "uniform", "causal": True,
          "causal_align": BOTTOM_RIGHT}
MOD_FIELDS = {
    "padding": {"padding": 0.25},
    "padding-causal": {"padding": 0.25, "causal": True},
    "ragged": {"lengths": "uniform", "causal": True},
    "ragged-packed": {"lengths": "uniform", "causal": True, "layout": PACKED},
    "ragged-packed-full": {"lengths": "bimodal", "layout": PACKED},
    "decode": DECODE,
    "decode-packed": {**DECODE, "layout": PACKED},
    "window": {"causal": True, "window": 8},
    "window-top-left": {**RECT, "window": 8},
    "window-bottom-right": {**RECT, "window": 8, "causal_align": BOTTOM_RIGHT},
    "alibi": {"causal": True, "alibi": True},
    "alibi-bottom-right": {**RECT, "alibi": True, "causal_align": BOTTOM_RIGHT},
    "bias-head": {"bias": "head"},
    "bias-batch_head": {"bias": "batch_head", "causal": True},
    "softcap": {"softcap": 5.0},
}
# Every feature at once, with grouped K/V heads, padded and packed, and without the soft cap
# (SDPA's): what the compiled adapters run (each case is a compilation)
MOD_ALL = {"lengths": "uniform", "causal": True, "window": 8, "alibi": True,
           "bias": "batch_head", "softcap": 5.0, "kv_heads": 2}
MOD_ALL_FIELDS = [MOD_ALL, {**MOD_ALL, "softcap": 0.0}, {**MOD_ALL, "layout": PACKED}]
# The backward with every feature at once (and without the soft cap, for those that have none),
# and a ragged decode step
MOD_BACKWARD_FIELDS = [MOD_ALL, {**MOD_ALL, "softcap": 0.0}, MOD_FIELDS["decode"]]


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


def mod_cases(names, dtypes=("float32",), fields=None) -> list[Case]:
    """Cases of MOD_FIELDS (or the given field sets) for each adapter and dtype."""
    fields = list(MOD_FIELDS.values()) if fields is None else fields
    return [Case(impl=name, dtype=dtype, **{**MOD_BASE, **f})
            for f in fields for name in names for dtype in dtypes]


def mod_backward_cases(names) -> list[Case]:
    """MOD_BACKWARD_FIELDS for each adapter, in mode fwd_bwd (float32)."""
    return [dataclasses.replace(c, mode="fwd_bwd")
            for c in mod_cases(names, fields=MOD_BACKWARD_FIELDS)]


def compiled_mod_cases(family: str = "torch") -> list[Case]:
    return mod_cases([n for n in COMPILED if registry.get(n).framework == family],
                     fields=MOD_ALL_FIELDS)


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
    if adapter.packed_only and case.layout != PACKED:
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
    assert set(adapter.dtypes) <= set(DTYPES)
    assert "cpu" in adapter.devices or not CPU_OK[name]
    assert adapter.features <= set(FEATURES)
    for feature in NOTED_FEATURES:  # every kernel takes it, or says why its library cannot
        assert feature in adapter.features or feature in adapter.feature_notes, feature
    if adapter.framework == TF_FRAMEWORK:
        assert "attnbench[tf]" in adapter.install_hint
    if "jax" in adapter.framework:
        assert "jax" in adapter.install_hint


@pytest.mark.parametrize("function", ["attention", "grouped"])
def test_a_function_says_why_for_every_feature_it_does_not_declare(function):
    from impls.torch_function import TorchFunction
    from tests.plugins import my_attn

    adapter = TorchFunction(f"tests.plugins.my_attn:{function}", getattr(my_attn, function))
    for feature in FEATURES:
        assert feature in adapter.features or feature in adapter.feature_notes, feature
    windowed = Case(impl=adapter.name, seq_len=64, causal=True, window=8)
    said = [r for r in adapter.unsupported(windowed) if "window" in r]
    assert said and adapter.feature_notes["window"] in said[0]


@pytest.mark.parametrize("name, case, word", [
    ("torch.sdpa.nested", {"window": 8}, "attn_mask"),
    ("torch.sdpa.nested", {"softcap": 30.0}, "soft-cap"),
    ("torch.varlen", {"alibi": True}, "alibi_slopes"),
    ("torch.varlen", {"bias": "head"}, "bias"),
])
def test_packed_adapters_say_why_their_library_cannot_take_a_modifier(name, case, word):
    adapter = registry.get(name)
    packed = Case(impl=name, batch=2, seq_len=64, causal=True, layout=PACKED, lengths="uniform",
                  **case)
    feature = next(iter(case_features(packed) - adapter.features))
    reasons = adapter.static_reasons(packed)
    assert any(adapter.feature_notes[feature] in r and word in r for r in reasons), reasons


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
                         + mod_cases(kernel_adapters(in_tf_process=False), ("float32", "bfloat16"))
                         + compiled_cases() + compiled_feature_cases() + compiled_mod_cases(),
                         ids=lambda c: c.case_id)
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
            + compiled_feature_cases(TF_FRAMEWORK)
            + mod_cases(kernel_adapters(in_tf_process=True)) + compiled_mod_cases(TF_FRAMEWORK)
            + mod_backward_cases(["tf.naive", "keras.ops"]))
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


def family_feature_cases(family: str) -> list[Case]:
    names = FAMILY_KERNELS[family]
    return feature_cases(names, dtypes=("float32",)) + mod_cases(names) + mod_backward_cases(names)


@pytest.mark.parametrize("family, case", [(f, c) for f in FAMILY_KERNELS
                                          for c in family_feature_cases(f)],
                         ids=lambda p: getattr(p, "case_id", p))
def test_family_feature_contract(family, case):
    """Grouped K/V heads, bottom-right masks and every problem feature each adapter declares
    on JAX and Keras on JAX / torch (float32), forward, and backward with the features at
    once."""
    require_family(family)
    result = family_feature_run(family)["records"][case.case_id]
    if expected_ok(case, registry.get(case.impl)):
        assert_ok(case, result)
    else:
        assert result["status"] == "unsupported" and "\n" not in result["reason"], result


@functools.cache
def family_feature_run(family: str) -> dict:
    return run_tf_cases(family_feature_cases(family), timeout=300, family=family)


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
    ({"lengths": "longtail"},
     "test.featureless takes no ragged batch (lengths longtail: each sequence's padded tokens "
     "must be masked); lengths = constant runs it"),
    ({"seq_len": 32, "causal": True, "window": 8},
     "test.featureless takes no sliding-window mask (window 8)"),
    ({"alibi": True}, "test.featureless takes no ALiBi bias (alibi = true)"),
    ({"bias": "batch_head"}, "test.featureless takes no additive score bias (bias batch_head)"),
    ({"softcap": 30.0}, "test.featureless takes no logit soft-capping (softcap 30)"),
])
def test_a_feature_not_declared_is_a_reason(fields, says):
    case = Case(impl=Featureless.name, **fields)
    assert Featureless().static_reasons(case) == [says]
    assert not NumpyAttention().static_reasons(dataclasses.replace(case, impl="numpy"))


def test_a_packed_batch_and_a_library_note_are_reasons():
    case = Case(impl="numpy", lengths="uniform", layout=PACKED)
    assert NumpyAttention().static_reasons(case) == [
        "numpy takes no packed batch (layout packed: the sequences end to end); layout = padded "
        "gives it the same problem padded"]
    capped = Case(impl="torch.sdpa", softcap=30.0)
    said = registry.get("torch.sdpa").static_reasons(capped)
    assert said[0].startswith("torch.sdpa takes no logit soft-capping (softcap 30): SDPA adds")
    nested = registry.get("torch.sdpa.nested")
    assert nested.static_reasons(Case(impl=nested.name, lengths="uniform")) == [
        "torch.sdpa.nested takes packed batches only (layout packed), not padded"]
    with pytest.raises(TypeError, match="unknown features"):
        type("Noted", (NumpyAttention,), {"feature_notes": {"windowed": "why"}})


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


# Problems shaped as the suites' own (suites/mods.toml, varlen.toml, padding.toml,
# varlen-decode.toml): an adapter that ignores one part of it is a mismatch
IGNORED = [
    ("test.wrong.ignores_window", {"seq_len": 512, "causal": True, "window": 128}),
    ("test.wrong.ignores_alibi", {"seq_len": 256, "causal": True, "alibi": True}),
    ("test.wrong.ignores_bias", {"seq_len": 256, "causal": True, "bias": "head"}),
    ("test.wrong.ignores_softcap", {"seq_len": 256, "causal": True, "softcap": 50.0}),
    ("test.wrong.ignores_softcap", {"seq_len": 256, "causal": True, "softcap": 20.0}),
    ("test.wrong.ignores_padding", {"batch": 4, "seq_len": 256, "padding": 0.25}),
    # (non-causal: under a causal mask a document's real queries never reach its padding)
    ("test.wrong.ignores_padding", {"batch": 8, "seq_len": 256, "lengths": "uniform"}),
    ("test.wrong.ignores_padding", {"batch": 4, "kv_heads": 2, "seq_len": 1, "seq_len_kv": 1024,
                                    "causal": True, "causal_align": BOTTOM_RIGHT,
                                    "lengths": "longtail"}),
]


@pytest.mark.parametrize("wrong, fields", IGNORED, ids=lambda p: p if isinstance(p, str) else
                         "-".join(f"{k}{v}" for k, v in p.items()))
def test_an_ignored_part_of_the_problem_is_a_mismatch(scratch_registry, wrong, fields):
    """Adapters that declare a window, ALiBi, a bias, a soft cap or key padding and ignore it
    (tests/plugins/wrong_modifiers.py) are mismatches through the worker's own path; the seed
    formula, which takes them all, is ok on the same problem."""
    from tests.plugins import wrong_modifiers

    for adapter in wrong_modifiers.ADAPTERS:
        registry.register(adapter)
    case = Case(impl=wrong, dtype="float32", **{"heads": 8, "head_dim": 64, **fields})
    result = execute(case, registry.get(wrong), FAST)
    assert result["status"] == "mismatch" and "max_abs_err" in result["reason"], result
    control = execute(dataclasses.replace(case, impl="numpy"), registry.get("numpy"), FAST)
    assert control["status"] == "ok", control


def test_every_wrong_modifier_declares_what_it_ignores():
    from tests.plugins import wrong_modifiers

    for adapter in wrong_modifiers.ADAPTERS:
        ignored = adapter.name.removeprefix("test.wrong.ignores_")
        assert ignored in adapter.features, adapter.name


def emulated_memory_efficient_attention(q, k, v, attn_bias=None):
    """xformers' memory_efficient_attention computed by the definition in float64, its
    attn_bias materialized as xformers itself does (`AttentionBias.materialize`): on a CPU,
    where xformers has no kernel, what each named mask and layout means."""
    torch = pytest.importorskip("torch")
    five = q.ndim == 5  # (B, M, G, H, K) grouped heads; else (B, M, H, K)
    if not five:
        q, k, v = (x.unsqueeze(3) for x in (q, k, v))
    qt, kt, vt = (x.permute(0, 2, 3, 1, 4).double() for x in (q, k, v))  # (B, G, H, M, K)
    scores = qt @ kt.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if isinstance(attn_bias, torch.Tensor):
        scores = scores + (attn_bias.double() if five else attn_bias.double().unsqueeze(2))
    elif attn_bias is not None:
        scores = scores + attn_bias.materialize(scores.shape[-2:], dtype=torch.float64)
    out = (torch.softmax(scores, -1) @ vt).permute(0, 3, 1, 2, 4).to(q.dtype)
    return out if five else out.squeeze(3)


@pytest.mark.parametrize("fields", list(MOD_FIELDS.values()) + MOD_ALL_FIELDS
                         + [{"causal": True}, {**RECT, "causal_align": BOTTOM_RIGHT},
                            {"padding": 0.25, "layout": PACKED}, {**DECODE, "window": 8}],
                         ids=lambda f: "-".join(f"{k}{v}" for k, v in f.items()))
def test_xformers_masks_are_the_problem(monkeypatch, fields):
    """xformers has no CPU kernel here, so its masks are checked by meaning: each attn_bias and
    layout the adapter builds (named types, padded keys, packed block-diagonal, a dense tensor),
    materialized by xformers and applied by the definition, gives the reference output; what it
    cannot take is a reason."""
    pytest.importorskip("xformers")
    import xformers.ops as xops

    from harness.problem.check import check_output
    from harness.problem.truth import problem, tolerance_for

    adapter = registry.get("xformers")
    case = Case(impl="xformers", dtype="float32", **{**MOD_BASE, **fields})
    reasons = adapter.static_reasons(case)
    if case.softcap:
        assert reasons and "soft-capping" in reasons[0]
        return
    if case.layout == PACKED and (case.alibi or case.bias != "none"):
        assert "block-diagonal masks" in adapter.library_reasons(case)[0]
        return
    assert not reasons, reasons
    monkeypatch.setattr(xops, "memory_efficient_attention", emulated_memory_efficient_attention)
    inputs, ref = problem(case)
    prepared = adapter.prepare(case, inputs)
    result = check_output(case, prepared, prepared.call(), ref, tolerance_for(case))
    assert result["status"] == "ok", (result, prepared.info)
    assert prepared.info["layout"] in ("padded", "flat", "packed")


@pytest.mark.parametrize("case", mod_backward_cases(
    ["numpy", "torch.naive", "torch.sdpa", "torch.sdpa.math"])
    + [dataclasses.replace(c, mode="fwd_bwd") for c in mod_cases(
        ["torch.sdpa.nested"], fields=[MOD_FIELDS["ragged-packed-full"],
                                       MOD_FIELDS["decode-packed"]])],
    ids=lambda c: c.case_id)
def test_features_backward(case):
    """Forward and backward with the features at once (gradients against the reference's,
    padded query rows out of the check): the same contract in mode fwd_bwd. TensorFlow's,
    JAX's and Keras's run in their workers (TF_CASES, family_feature_cases)."""
    adapter = registry.get(case.impl)
    result = run_case(case, adapter, FAST)
    if not expected_ok(case, adapter):
        assert result["status"] == "unsupported", result
        return
    assert result["status"] == "ok", result
    assert 0.0 <= result["grad_err_ratio"] <= 1.0


def test_packing_round_trips_the_real_tokens():
    from impls._masks import packing

    case = Case(impl="numpy", batch=3, heads=2, seq_len=10, head_dim=4, lengths="bimodal")
    x = kernel_inputs(case)["q"]
    pack = packing(case)
    packed = pack.pack(x)
    assert packed.shape == (2, pack.q_total, 4) and pack.q_total == int(pack.q_lengths.sum())
    back = pack.unpack(packed, case.seq_len)
    for b, n in enumerate(pack.q_lengths):
        assert np.array_equal(back[b, :, :n], x[b, :, :n]) and not back[b, :, n:].any()
    assert list(pack.documents()[:pack.q_lengths[0] + 1]) == [0] * pack.q_lengths[0] + [1]


def test_sdpa_mask_says_what_it_is_and_forces():
    """A mask chosen in prepare is in the record's impl_info, with what it forces on this
    device; the kernel field is still the profiler's."""
    for fields, kind in (({"padding": 0.25, "causal": True}, "bool"),
                         ({"alibi": True, "causal": True, "kv_heads": 2}, "float32")):
        case = Case(impl="torch.sdpa", heads=4, seq_len=24, head_dim=16, **fields)
        result = run_case(case, registry.get("torch.sdpa"), FAST)
        assert result["status"] == "ok" and result["kernel"] == "flash_attention", result
        info = result["impl_info"]
        said = info["sdpa_attn_mask"]
        assert said.startswith(kind) and "causal top_left" in said
        assert info["sdpa_mask_forces"].startswith("nothing on cpu")
    plain = run_case(Case(impl="torch.sdpa", heads=4, seq_len=24, head_dim=16, causal=True),
                     registry.get("torch.sdpa"), FAST)
    assert plain["impl_info"] is None  # is_causal: no mask built


def test_nested_sdpa_records_the_backend_that_ran():
    case = Case(impl="torch.sdpa.nested", batch=3, heads=2, seq_len=40, head_dim=16,
                lengths="longtail", layout=PACKED)
    result = run_case(case, registry.get(case.impl), FAST)
    assert result["status"] == "ok" and result["kernel"] == "math", result
    info = result["impl_info"]
    assert info["packed_queries"] == info["packed_keys"] < 3 * 40


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
        q, k, v = (torch.from_numpy(kernel_inputs(case)[n]).float() for n in "qkv")
        return sdpa_options(case, q, k, v)

    assert options(seq_len=5) == {}
    assert options(seq_len=5, causal=True) == {"is_causal": True}
    assert options(seq_len=5, kv_heads=2) == {"enable_gqa": True}
    got = options(seq_len=3, seq_len_kv=7, kv_heads=1, causal=True, causal_align=BOTTOM_RIGHT)
    assert got.keys() == {"enable_gqa", "attn_mask"}  # on the CPU, the mask built once
    assert got["attn_mask"].dtype == torch.bool
    assert np.array_equal(got["attn_mask"].numpy(), causal_keep(3, 7, BOTTOM_RIGHT))
    padded = options(batch=2, seq_len=5, padding=0.4)["attn_mask"]  # key padding alone
    assert padded.dtype == torch.bool and padded.shape == (2, 1, 1, 5)
    windowed = options(seq_len=6, causal=True, window=2)["attn_mask"]
    assert np.array_equal(windowed.numpy(), causal_keep(6, 6, window=2))
    with pytest.raises(ValueError, match="needs its inputs"):
        options(seq_len=5, bias="head")


def test_sdpa_float_mask_carries_alibi_and_the_masks():
    torch = pytest.importorskip("torch")
    from harness.problem.modifiers import alibi_bias
    from impls._torch import sdpa_options

    case = Case(impl="torch.sdpa", heads=4, seq_len=5, head_dim=8, causal=True, alibi=True)
    q = torch.zeros(1, 4, 5, 8)
    mask = sdpa_options(case, q, q, q, {})["attn_mask"]
    assert mask.dtype == torch.float32 and mask.shape == (1, 4, 5, 5)
    expected = np.where(causal_keep(5, 5), alibi_bias(case), -np.inf)
    np.testing.assert_allclose(mask.numpy(), expected, rtol=1e-6)


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
