"""Compiled and jitted implementations: their first call is compile_s and never a sample; a
silent fallback to eager is an error; each framework family gets a process of its own."""
from __future__ import annotations

import dataclasses
import time

import pytest

from harness import registry
from harness.measure.timer import Timer
from harness.run.execute import execute, run_case
from harness.run.process import FAMILIES, worker_env
from harness.spec import Case, TimingSettings
from harness.store.records import RECORD_FIELDS
from impls.numpy_ref import NumpyAttention

FAST = TimingSettings(warmup_s=0.001, min_samples=3, max_samples=5, budget_s=0.05)
COMPILE_S = 0.3


class SlowFirstCall(NumpyAttention):
    """Stands for compiled code: its first call takes COMPILE_S, every later one microseconds."""
    name = "test.slow_first_call"

    def prepare(self, case, inputs):
        prepared = super().prepare(case, inputs)
        call, calls = prepared.call, []

        def first_call_sleeps():
            if not calls:
                time.sleep(COMPILE_S)
            calls.append(1)
            return call()

        return dataclasses.replace(prepared, call=first_call_sleeps, compiled=True)


@pytest.fixture
def scratch_registry(monkeypatch):
    registry.adapters()
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_compile_time_stays_out_of_the_samples(scratch_registry):
    registry.register(SlowFirstCall())
    case = Case(impl=SlowFirstCall.name, heads=2, seq_len=16, head_dim=8)
    result = run_case(case, registry.get(case.impl), FAST)
    assert result["status"] == "ok", result
    assert result["compile_s"] >= COMPILE_S
    assert max(result["samples_s"]) < COMPILE_S / 10
    assert result["timed_s"] < COMPILE_S  # nor inside the warm-up's time
    eager = run_case(dataclasses.replace(case, impl="numpy"), registry.get("numpy"), FAST)
    assert eager["status"] == "ok" and eager["compile_s"] is None
    assert {"compile_s", "impl_info"} <= set(RECORD_FIELDS)


def test_the_compile_call_is_no_warm_up_call_and_sizes_no_block():
    calls = []

    def slow_then_fast():
        calls.append(1)
        if len(calls) == 1:
            time.sleep(0.05)

    timer = Timer(slow_then_fast, lambda: None,
                  TimingSettings(warmup_s=0.0, min_samples=3, max_samples=3, min_sample_s=1e-3))
    assert timer.compile_call() >= 0.05
    assert timer.warmup_calls == 0 and timer.timed_ns == 0
    stats = timer.measure().to_record()
    assert stats["warmup_calls"] == 2 and stats["calls_per_sample"] > 1


# --- a fallback to eager code is an error, never ok ---------------------------------------

@pytest.fixture
def dynamo_disabled():
    """torch.compile made a no-op, as TORCHDYNAMO_DISABLE=1 would: the code runs eager. Set
    through torch's own config.patch, which restores the key; monkeypatch would delete it and
    leave it hidden for the rest of the process."""
    torch = pytest.importorskip("torch")
    with torch._dynamo.config.patch(disable=True):
        yield


def test_flex_without_compilation_is_an_error(dynamo_disabled):
    case = Case(impl="torch.flex", heads=2, seq_len=16, head_dim=16, causal=True)
    result = execute(case, registry.get("torch.flex"), FAST)  # the worker's path
    assert result["status"] == "error", result
    assert "flex_attention called without torch.compile" in result["reason"]


@pytest.mark.parametrize("name", ["torch.compile.sdpa", "torch.compile.naive"])
def test_compiled_code_that_did_not_run_is_an_error(dynamo_disabled, name):
    case = Case(impl=name, heads=2, seq_len=16, head_dim=16)
    result = execute(case, registry.get(name), FAST)
    assert result["status"] == "error", result
    assert "found no compiled frames" in result["reason"]  # torch's words (fullgraph=True)


def test_a_profile_without_the_compiled_graph_is_an_error():
    """The harness's own check, should torch ever run eager without saying so."""
    from harness.measure.kernels import kernel_pass, name_kernel

    assert name_kernel("compiled", ["aten::bmm", "## Call CompiledFxGraph abc ##"]) == "inductor"
    assert name_kernel("compiled", ["aten::bmm", "aten::softmax"]) is None
    adapter = registry.get("torch.compile.sdpa")
    case = Case(impl="torch.sdpa", heads=2, seq_len=8, head_dim=16)
    from harness.problem.inputs import kernel_inputs

    eager = registry.get("torch.sdpa").prepare(case, kernel_inputs(case))
    eager.kernel = "inductor"  # claims compiled code, runs eager
    result = kernel_pass(adapter, eager)
    assert result["status"] == "error" and "no compiled graph" in result["reason"]


def test_flex_records_its_block_mask():
    pytest.importorskip("torch")
    case = Case(impl="torch.flex", heads=2, seq_len=64, head_dim=32, causal=True)
    result = run_case(case, registry.get("torch.flex"), FAST)
    assert result["status"] == "ok", result
    assert result["kernel"] == "inductor" and result["compile_s"] > 0
    info = result["impl_info"]
    assert info["block_size"] == 128 and info["block_mask_sparsity"] == 0.0  # one tile
    assert info["block_mask_build_s"] > 0


def test_flex_block_mask_follows_the_alignment():
    """Top-left, 128 queries on 384 keys keep only the first key tile (two of three skipped);
    bottom-right keeps all three: the BlockMask is built from the aligned mask_mod, and the
    grouped K/V heads go in as they are (enable_gqa)."""
    pytest.importorskip("torch")
    from torch.nn.attention.flex_attention import create_block_mask

    from impls.torch_flex import BLOCK_SIZE, causal_mod

    top_left = create_block_mask(causal_mod(0), None, None, 128, 384, device="cpu",
                                 BLOCK_SIZE=BLOCK_SIZE)
    assert int(top_left.kv_num_blocks.sum()) + int(top_left.full_kv_num_blocks.sum()) == 1
    case = Case(impl="torch.flex", heads=4, kv_heads=2, seq_len=128, seq_len_kv=384, head_dim=32,
                causal=True, causal_align="bottom_right")
    result = run_case(case, registry.get("torch.flex"), FAST)
    assert result["status"] == "ok", result
    assert result["impl_info"]["block_mask_sparsity"] == 0.0


def test_flex_packs_documents_and_records_what_its_masks_skip():
    """Four documents of 128 tokens packed end to end: the document mask keeps the 4 diagonal
    tiles of 16 (sparsity 0.75), and a window of 128 on 512 causal tokens skips every tile
    below the first sub-diagonal; the score_mod's modifiers are named."""
    pytest.importorskip("torch")
    packed = Case(impl="torch.flex", batch=4, heads=2, seq_len=128, head_dim=32,
                  layout="packed")
    result = run_case(packed, registry.get("torch.flex"), FAST)
    assert result["status"] == "ok", result
    info = result["impl_info"]
    assert info["block_mask_sparsity"] == 0.75 and info["packed_queries"] == 512
    assert info["mask_mod"] == "documents"
    windowed = Case(impl="torch.flex", heads=2, seq_len=512, head_dim=32, causal=True,
                    window=128, alibi=True, softcap=20.0)
    result = run_case(windowed, registry.get("torch.flex"), FAST)
    assert result["status"] == "ok", result
    info = result["impl_info"]
    # of 4 x 4 tiles the causal window keeps the diagonal and the one below it: 7
    assert info["block_mask_sparsity"] == 1 - 7 / 16
    assert info["mask_mod"] == "causal top_left, window 128" and info["score_mod"] == (
        "softcap 20, alibi")


# --- worker families ------------------------------------------------------------------------

def test_every_adapter_names_a_known_family():
    assert {a.framework for a in registry.adapters().values()} <= set(FAMILIES)


@pytest.mark.parametrize("family, backend", [("tensorflow", "tensorflow"), ("keras-jax", "jax"),
                                             ("keras-torch", "torch")])
def test_keras_backend_is_fixed_per_family(family, backend):
    assert worker_env(family, 2)["KERAS_BACKEND"] == backend


def test_jax_families_enable_float64_and_no_preallocation():
    for family in ("jax", "keras-jax"):
        env = worker_env(family, 2)
        assert env["JAX_ENABLE_X64"] == "true" and env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    with pytest.raises(ValueError, match="unknown worker family"):
        worker_env("jaxx", 2)
