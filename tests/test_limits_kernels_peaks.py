"""--mem-limit plumbing (the CUDA cap's device with torch's calls stubbed), which-kernel-ran
detection, and the machine-peak microbenchmark, where a figure that fails keeps the others."""
import json
import types

import numpy as np
import pytest
import torch

from harness import registry
from harness.measure import peaks as peaks_module
from harness.measure.peaks import measure_peaks, pct_of_peak
from harness.run.execute import run_case
from harness.run.limits import cap_cpu, cap_cuda, requested_bytes
from harness.spec import Case, TimingSettings
from harness.store import load_records
from harness.store.rundir import env_problem
from harness.units import parse_size
from harness.values import SIZE, BadValue
from impls.torch_sdpa import TorchSDPA
from tests.conftest import ROOT, attnbench

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
    assert 0 < cpu["timer_resolution_s"]["host"] < 1e-3  # the clock's measured resolution
    record = {"device": "cpu", "dtype": "float32", "tflops": cpu["matmul_tflops"]["float32"] / 4}
    assert pct_of_peak(record, peaks) == pytest.approx(25.0)
    assert pct_of_peak({**record, "dtype": "float16"}, peaks) is None


# ---- the CUDA cap's device: torch's own index parsing, with the CUDA calls stubbed -----------

@pytest.mark.parametrize("device, index", [("cuda", None), ("cuda:1", 1)])
def test_the_cuda_cap_hands_torch_an_index_or_none_never_the_bare_name(monkeypatch, device, index):
    asked, set_to = [], []
    total = 80 * 2**30
    monkeypatch.setattr(torch.cuda.memory, "_lazy_init", lambda: None)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d=None: (
        asked.append(d), types.SimpleNamespace(total_memory=total))[1])
    monkeypatch.setattr(torch._C, "_cuda_setMemoryFraction",
                        lambda fraction, d: set_to.append((fraction, d)), raising=False)
    cap_cuda(device, 2 * 2**30)  # "cuda" reached torch.cuda's parsing, which raised ValueError
    assert asked == [index]
    assert set_to == [(pytest.approx(2 / 80), 0 if index is None else index)]
    cap_cuda(device, None)
    assert set_to[-1][0] == 1.0


# ---- a failed peak keeps the others ----------------------------------------------------------

def test_a_peak_that_cannot_be_measured_leaves_its_error_and_keeps_the_rest(monkeypatch):
    def matmul(device, dtype):
        if dtype == "float16":
            raise ValueError("no float16 matmul here\nsecond line")
        return 1.5

    monkeypatch.setattr(peaks_module, "matmul_tflops", matmul)
    monkeypatch.setattr(peaks_module, "bandwidth_gbs", lambda device: 20.0)
    cpu = measure_peaks([("cpu", "float32"), ("cpu", "float16")])["cpu"]
    assert cpu["matmul_tflops"] == {"float32": 1.5} and cpu["bandwidth_gbs"] == 20.0
    assert cpu["errors"] == {"float16": "ValueError: no float16 matmul here"}
    assert env_problem({"peaks": {"cpu": cpu}}) is None  # env.json keeps it readable

    monkeypatch.setattr(peaks_module, "bandwidth_gbs", lambda device: 1 / 0)
    cpu = measure_peaks([("cpu", "float32")])["cpu"]
    assert cpu["matmul_tflops"] == {"float32": 1.5} and "bandwidth_gbs" not in cpu
    assert cpu["errors"]["bandwidth"].startswith("ZeroDivisionError")


def test_peaks_on_a_device_torch_cannot_reach_are_errors_not_a_raise():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    cuda = measure_peaks([("cuda", "bfloat16")])["cuda"]
    assert cuda["matmul_tflops"] == {}
    assert set(cuda["errors"]) == {"bfloat16", "bandwidth", "timer_resolution"}
    assert env_problem({"peaks": {"cuda": cuda}}) is None


DIE_AT_PEAKS = """\
import os
if os.environ.get("ATTNBENCH_TEST_DIE_AT_PEAKS"):
    import harness.measure.peaks
    harness.measure.peaks.measure_peaks = lambda targets: os._exit(3)
"""


def test_a_worker_that_dies_measuring_peaks_leaves_env_json_readable_and_resumable(tmp_path):
    """Every process of the run (the workers too) loads the sitecustomize that ends the worker
    at its peaks request: env.json then keeps the error beside, never as, the peaks."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(DIE_AT_PEAKS)
    out = tmp_path / "run"
    args = ("run", "smoke", "--impl", "torch.sdpa", "--seq-len", "32", "--causal", "false",
            "--out", out, "--no-report")
    env = {"PYTHONPATH": f"{site}:{ROOT}", "ATTNBENCH_TEST_DIE_AT_PEAKS": "1"}
    result = attnbench(*args, env=env)
    assert result.returncode == 0, result.stderr
    run_env = json.loads((out / "env.json").read_text())
    assert "peaks" not in run_env and run_env["peaks_error"]
    assert {r["status"] for r in load_records(out)} == {"ok"}  # the cases ran on
    report = attnbench("report", out)
    assert report.returncode == 0, report.stderr
    (out / "results.jsonl").write_text("")  # nothing recorded: resume measures it all again
    resumed = attnbench(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((out / "env.json").read_text())["peaks"]["cpu"]["bandwidth_gbs"] > 0
