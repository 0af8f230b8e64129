"""--mem-limit plumbing, which-kernel-ran detection, and the machine-peak microbenchmark."""
import numpy as np
import pytest
import torch

from harness import registry
from harness.run.execute import run_case
from harness.run.limits import cap_cpu, requested_bytes
from harness.units import parse_size
from harness.values import SIZE, BadValue
from harness.measure.peaks import measure_peaks, pct_of_peak
from harness.spec import Case
from harness.spec import TimingSettings
from impls.torch_sdpa import TorchSDPA

FAST = TimingSettings(warmup_s=0.001, min_samples=2, max_samples=3, budget_s=0.01)


@pytest.mark.parametrize("text, expected", [
    ("512MiB", 512 * 2**20), ("2GiB", 2 * 2**30), ("1.5G", int(1.5 * 2**30)), ("1000", 1000),
    ("64 MB", 64 * 10**6), ("8.00 PiB", 8 * 2**50), ("3EiB", 3 * 2**60),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected
    assert SIZE.from_text(text, "--mem-limit") == expected


@pytest.mark.parametrize("text", ["", "-5MiB", "12 parsecs", "MiB", "0", "8EiB", "nan", "inf"])
def test_sizes_that_are_not_a_positive_size_are_refused(text):
    with pytest.raises(BadValue, match="--mem-limit: expected a positive size"):
        SIZE.from_text(text, "--mem-limit")


@pytest.mark.parametrize("message, size", [
    ("DefaultCPUAllocator: can't allocate memory: you tried to allocate 536870912 bytes.", 2**29),
    ("Unable to allocate 512. MiB for an array with shape (67108864,)", 2**29),
    ("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total)", 2**31),
    ("Unable to allocate 8.00 PiB for an array with shape (1, 8, 33554432, 33554432)", 2**53),
    ("Unable to allocate 2.00 EiB for an array with shape (1, 8, 2**31, 2**31)", 2**61),
    ("OOM when allocating tensor with shape[1,8,4096,4096] and type float on CPU:0", 2**29),
    ("something else went wrong", None),
])
def test_requested_bytes_reads_each_library_s_message(message, size):
    assert requested_bytes(message) == size


def test_cap_cpu_refuses_an_allocation_beyond_the_limit_then_lifts():
    cap_cpu(64 * 2**20)
    try:
        with pytest.raises(MemoryError):
            np.ones(256 * 2**20 // 8)
        small = np.ones(8 * 2**20 // 8)  # within the limit
        assert small.sum() == small.size
    finally:
        cap_cpu(None)
    assert np.ones(256 * 2**20 // 8).size  # lifted


@pytest.mark.parametrize("impl, kernel", [
    ("torch.sdpa", "flash_attention"), ("torch.sdpa.flash", "flash_attention"),
    ("torch.sdpa.math", "math"),
])
def test_the_kernel_that_ran_is_recorded(impl, kernel):
    result = run_case(Case(impl=impl, heads=2, seq_len=64, head_dim=32), registry.get(impl), FAST)
    assert result["status"] == "ok"
    assert result["kernel"] == kernel


def test_the_dispatcher_s_silent_fallback_to_math_is_visible():
    """Outside code that restricts the backends (here a MATH-only context) makes the dispatcher
    fall back; the recorded kernel must say so."""
    case = Case(impl="torch.sdpa", heads=2, seq_len=64, head_dim=32)
    adapter = registry.get("torch.sdpa")
    inputs = {n: np.random.default_rng(0).standard_normal((1, 2, 64, 32)) for n in "qkv"}
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        prepared = adapter.prepare(case, inputs)
        from harness.measure.kernels import torch_sdpa_kernel
        assert torch_sdpa_kernel(prepared) == "math"
    prepared.close()


class MislabelledPin(TorchSDPA):
    """Claims to pin math but pins flash: the harness must not call its time math's."""

    def prepare(self, case, inputs):
        prepared = super().prepare(case, inputs)
        prepared.kernel = "math"
        return prepared


def test_a_pinned_backend_that_did_not_run_is_an_error():
    adapter = MislabelledPin("test.mislabelled", "FLASH_ATTENTION", "test")
    result = run_case(Case(impl="test.mislabelled", heads=2, seq_len=64, head_dim=32), adapter, FAST)
    assert result["status"] == "error"
    assert "pinned math" in result["reason"] and "flash_attention" in result["reason"]


def test_peaks_are_measured_per_device_and_dtype():
    peaks = measure_peaks([("cpu", "float32"), ("cpu", "bfloat16")])
    cpu = peaks["cpu"]
    assert cpu["matmul_tflops"]["float32"] > 0 and cpu["matmul_tflops"]["bfloat16"] > 0
    assert cpu["bandwidth_gbs"] > 0
    record = {"device": "cpu", "dtype": "float32", "tflops": cpu["matmul_tflops"]["float32"] / 4}
    assert pct_of_peak(record, peaks) == pytest.approx(25.0)
    assert pct_of_peak({**record, "dtype": "float16"}, peaks) is None
