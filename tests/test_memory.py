"""Peak-memory probes (harness/memory.py): do they tell the truth about one call's extra memory?

"Memory truth": naive attention at N=2048 must show at least one (B, H, N, N) float32 score
matrix (128 MiB) and at most 4 of them; flash attention must not show one at all. The inputs
must not be counted, a known allocation must be measured to within 5%, the peak (not the end
state) is what counts, and the probe must survive being called many times in one process.
TensorFlow runs in a child process (tests/tf_memory_worker.py): torch is imported here.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.measure import memory

from harness import registry
from harness.problem.truth import problem
from harness.measure.memory import measure_peak
from harness.spec import Case
from impls.base import Prepared

ROOT = Path(__file__).resolve().parent.parent
MIB = 1 << 20
N = 2048
SHAPE = dict(dtype="float32", batch=1, heads=8, seq_len=N, head_dim=64, causal=False)
SCORES = 1 * 8 * N * N * 4  # one float32 score matrix: 128 MiB
OUTPUT = 1 * 8 * N * 64 * 4  # the output: 4 MiB
HAVE_MEMRAY = importlib.util.find_spec("memray") is not None
HAVE_TF = importlib.util.find_spec("tensorflow") is not None
needs_memray = pytest.mark.skipif(not HAVE_MEMRAY, reason=memory.MEMRAY_HINT)


def bare(call) -> Prepared:
    """A Prepared around any call, for probes of known allocations."""
    return Prepared(call=call, to_numpy=np.asarray, out_dtype=lambda out: str(out.dtype))


def probe_adapter(name: str, device: str = "cpu", **probe_kw):
    case = Case(impl=name, device=device, **SHAPE)
    adapter = registry.get(name)
    reasons = adapter.unsupported(case)
    if reasons:
        pytest.skip("; ".join(reasons))
    inputs, _ = problem(case)
    prepared = adapter.prepare(case, inputs)
    try:
        return measure_peak(prepared, adapter.framework, device, **probe_kw)
    finally:
        prepared.close()


def torch_tensor(nbytes: int):
    import torch

    return torch.ones(nbytes // 4, dtype=torch.float32)


ALLOCATORS = {"numpy": lambda nbytes: np.ones(nbytes // 8), "torch": torch_tensor}


@needs_memray
@pytest.mark.parametrize("name", ["numpy", "torch.naive"])
def test_naive_shows_the_score_matrix(name, tmp_path):
    peak, method, note = probe_adapter(name, workdir=str(tmp_path))
    assert method == "memray", note
    assert SCORES <= peak <= 4 * SCORES, f"{name}: {peak / MIB:.1f} MiB"
    assert list(tmp_path.iterdir()) == []  # the capture file is gone


@needs_memray
def test_flash_on_cpu_never_holds_the_scores():
    peak, method, note = probe_adapter("torch.sdpa.flash")
    assert method == "memray", note
    assert OUTPUT <= peak < 16 * MIB, f"{peak / MIB:.1f} MiB"  # the output counts, scores do not


@needs_memray
@pytest.mark.parametrize("framework", ["numpy", "torch"])
def test_inputs_are_not_counted(framework):
    existing = ALLOCATORS[framework](64 * MIB)
    peak, method, _ = measure_peak(bare(lambda: existing), framework, "cpu")
    assert method == "memray"
    assert 0 <= peak < MIB, f"{peak / MIB:.2f} MiB"


@needs_memray
@pytest.mark.parametrize("framework", ["numpy", "torch"])
def test_a_known_allocation_is_measured(framework):
    peak, _, _ = measure_peak(bare(lambda: ALLOCATORS[framework](64 * MIB)), framework, "cpu")
    assert abs(peak - 64 * MIB) <= 0.05 * 64 * MIB, f"{peak / MIB:.2f} MiB"


@needs_memray
@pytest.mark.parametrize("framework", ["numpy", "torch"])
def test_the_peak_counts_not_the_end(framework):
    """A temporary freed before the call returns still counts: it was live at the peak."""
    make = ALLOCATORS[framework]

    def call():
        temporary = make(64 * MIB)
        del temporary
        return make(MIB)

    peak, _, _ = measure_peak(bare(call), framework, "cpu")
    assert 64 * MIB <= peak <= 1.05 * 65 * MIB, f"{peak / MIB:.2f} MiB"


@needs_memray
def test_many_probes_in_one_process(tmp_path):
    peaks = [measure_peak(bare(lambda: torch_tensor(4 * MIB)), "torch", "cpu", str(tmp_path))[0]
             for _ in range(50)]
    assert all(abs(p - 4 * MIB) <= 0.05 * 4 * MIB for p in peaks), peaks
    assert list(tmp_path.iterdir()) == []


@needs_memray
def test_a_failing_call_releases_the_tracker(tmp_path):
    def call():
        raise MemoryError("simulated")

    with pytest.raises(MemoryError):
        measure_peak(bare(call), "numpy", "cpu", str(tmp_path))
    assert list(tmp_path.iterdir()) == []
    peak, method, _ = measure_peak(bare(lambda: np.ones(MIB // 8)), "numpy", "cpu")
    assert method == "memray" and peak >= MIB  # a new Tracker could start


@needs_memray
def test_a_tracker_already_running_is_reported_not_raised(tmp_path):
    import memray

    with memray.Tracker(str(tmp_path / "outer.bin")):
        peak, method, note = measure_peak(bare(lambda: np.ones(8)), "numpy", "cpu",
                                          str(tmp_path / "work"))
    assert (peak, method) == (None, "none") and "memray could not start" in note
    assert list((tmp_path / "work").iterdir()) == []


def test_without_memray_the_probe_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "memray", None)  # makes `import memray` fail
    assert measure_peak(bare(lambda: np.ones(8)), "numpy", "cpu") == (None, "none",
                                                                      memory.MEMRAY_HINT)


@pytest.mark.parametrize("framework, device", [("jax", "cpu"), ("numpy", "cuda"),
                                               ("torch", "mps")])
def test_no_probe_is_a_reason_not_an_error(framework, device):
    called = []
    peak, method, note = measure_peak(bare(lambda: called.append(1)), framework, device)
    assert (peak, method) == (None, "none") and framework in note and not called


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(not _cuda(), reason="no CUDA device visible to torch")
def test_cuda_probes_tell_the_truth():
    import torch

    peak, method, _ = probe_adapter("torch.naive", device="cuda")
    assert method == "torch.cuda.max_memory_allocated"
    assert SCORES <= peak <= 4 * SCORES, f"{peak / MIB:.1f} MiB"
    existing = torch.ones(16 * MIB, device="cuda")
    assert measure_peak(bare(lambda: existing), "torch", "cuda")[0] == 0
    peak, _, _ = measure_peak(bare(lambda: torch.ones(16 * MIB, device="cuda")), "torch", "cuda")
    assert peak == 64 * MIB


# TensorFlow: a child process per configuration; torch never meets TensorFlow.

needs_tf = pytest.mark.skipif(not HAVE_TF, reason="tensorflow not installed: pip install 'attnbench[tf]'")


@pytest.fixture(scope="module", params=["1", "0"], ids=["onednn", "no-onednn"])
def tf_probe(request):
    """The worker's figures with oneDNN on (TF's CPU counters exist) and off (memray fallback)."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "2",
           "TF_ENABLE_ONEDNN_OPTS": request.param}
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "tf_memory_worker.py"), str(N)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        pytest.fail(f"TF memory worker failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    return request.param, json.loads(lines[-1][len("RESULT "):])


@needs_tf
def test_tf_naive_shows_the_score_matrix(tf_probe):
    onednn, result = tf_probe
    expected = "tf.config.experimental.get_memory_info" if onednn == "1" else "memray"
    for run in result["naive"]:
        assert run["method"] == expected, run["note"]
        assert SCORES <= run["peak"] <= 4 * SCORES, f"{run['peak'] / MIB:.1f} MiB"


@needs_tf
def test_tf_inputs_not_counted_and_known_allocation(tf_probe):
    _, result = tf_probe
    assert 0 <= result["existing"]["peak"] < MIB
    assert abs(result["alloc_64mib"]["peak"] - 64 * MIB) <= 0.05 * 64 * MIB


@needs_tf
def test_tf_stays_out_of_this_process(tf_probe):
    _, result = tf_probe
    assert not result["torch_imported"]
    assert "tensorflow" not in sys.modules
