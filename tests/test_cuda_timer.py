"""GPU timing without a GPU: which clock a case gets, the L2 flush's size, and the one sampling
loop driven by fake CUDA events, a fake flush and a fake graph capture, so the order of what
happens around each sample is seen; then the record field, the report's text and the memory
probes' choice for JAX and TensorFlow on a GPU, with fake libraries."""
from __future__ import annotations

import dataclasses
import sys
import types

import numpy as np
import pytest

from harness import registry
from harness.measure import clocks, cuda, memory, peaks
from harness.measure.repeats import split
from harness.measure.timer import HOST, Samples, Timer
from harness.report import method
from harness.run import execute
from harness.spec import Case, TimingSettings
from impls.base import Adapter, Prepared

GPU_CASE = Case(impl="torch.sdpa", device="cuda", dtype="bfloat16", seq_len=1024)
GRAPHS = TimingSettings(cuda_graphs=True)
FAST_GRAPHS = TimingSettings(warmup_s=0.001, min_samples=3, max_samples=3, budget_s=0.01,
                             cuda_graphs=True)
MIB = 2**20


# ---- which timer ---------------------------------------------------------------------------

@pytest.mark.parametrize("device, framework, settings, expected", [
    ("cpu", "torch", TimingSettings(), HOST),
    ("cpu", "numpy", TimingSettings(), HOST),
    ("cuda", "torch", TimingSettings(), clocks.CUDA_EVENT),
    ("cuda:1", "torch", TimingSettings(), clocks.CUDA_EVENT),
    ("cuda", "torch", GRAPHS, clocks.CUDA_GRAPH),
    ("cuda", "jax", TimingSettings(), HOST),
    ("cuda", "keras-jax", TimingSettings(), HOST),
    ("cuda", "tensorflow", TimingSettings(), HOST),
])
def test_each_case_gets_its_timer(device, framework, settings, expected):
    case = dataclasses.replace(GPU_CASE, device=device)
    assert clocks.select_timer(case, framework, settings) == expected
    assert expected in clocks.TIMERS


@pytest.mark.parametrize("device, framework, said", [
    ("cpu", "torch", "runs on cpu: CUDA graphs need a CUDA device"),
    ("cuda", "jax", "is a jax implementation"),
    ("cuda", "tensorflow", "is a tensorflow implementation"),
])
def test_cuda_graphs_are_refused_off_torch_on_cuda(device, framework, said):
    case = dataclasses.replace(GPU_CASE, device=device)
    assert said in clocks.graph_refusal(case, framework)
    with pytest.raises(clocks.TimerUnavailable, match=said):
        clocks.select_timer(case, framework, GRAPHS)
    assert clocks.graph_refusal(GPU_CASE, "torch") is None


def test_the_host_clock_is_built_without_a_gpu():
    assert clocks.sample_clock(HOST, "cpu").name == HOST
    assert peaks.timer_for("cpu") == HOST and peaks.timer_for("cuda:0") == clocks.CUDA_EVENT


# ---- the flush's size -----------------------------------------------------------------------

@pytest.mark.parametrize("l2, expected", [
    (50 * MIB, 100 * MIB),  # H100/H200: twice the L2
    (40 * MIB + 1, 81 * MIB),  # twice is 80 MiB + 2 bytes: rounded up to a whole MiB
    (6 * 2**19, 6 * MIB),  # 3 MiB: exactly 6 MiB, no rounding
    (0, cuda.FALLBACK_FLUSH_BYTES), (None, cuda.FALLBACK_FLUSH_BYTES),
])
def test_flush_is_twice_the_l2_in_whole_mib_or_the_fallback(l2, expected):
    assert cuda.flush_bytes(l2) == expected
    assert cuda.flush_bytes(l2) % 4 == 0  # whole int32 elements


def test_the_l2_size_is_read_from_the_device_properties_when_they_have_it():
    assert cuda.l2_bytes(types.SimpleNamespace(L2_cache_size=50 * MIB)) == 50 * MIB
    assert cuda.l2_bytes(types.SimpleNamespace(L2_cache_size=0)) is None
    assert cuda.l2_bytes(types.SimpleNamespace(name="old torch, no such property")) is None
    assert cuda.FALLBACK_FLUSH_BYTES >= cuda.FLUSH_FACTOR * 50 * MIB


# ---- the clock's device: torch's own index parsing, with the CUDA calls stubbed ---------------

@pytest.fixture
def stub_cuda(monkeypatch):
    """torch.cuda.set_device's own parsing runs; what it would hand the driver is recorded
    (the device index), and events and the flush are fakes: no GPU is needed."""
    import torch

    set_to = []
    monkeypatch.setattr(torch._C, "_cuda_setDevice", set_to.append, raising=False)
    monkeypatch.setattr(torch.cuda, "Event", lambda enable_timing=False: types.SimpleNamespace(
        enable_timing=enable_timing), raising=False)
    monkeypatch.setattr(cuda, "flush_buffer", lambda device: lambda: None)
    return set_to


@pytest.mark.parametrize("device, set_to", [("cuda", []), ("cuda:0", [0]), ("cuda:1", [1])])
def test_the_clock_sets_the_device_only_when_the_case_names_an_index(stub_cuda, device, set_to):
    clock = cuda.event_clock(device)  # "cuda" (every GPU suite's device) must not raise
    assert stub_cuda == set_to
    assert clock.begin.enable_timing and clock.end.enable_timing and clock.begin is not clock.end
    assert cuda.graph_clock(device).name == clocks.CUDA_GRAPH


def test_torch_refuses_the_bare_device_name_that_the_clock_no_longer_hands_it(stub_cuda):
    import torch

    with pytest.raises(ValueError):  # what every GPU case met before
        torch.cuda.set_device(torch.device("cuda"))


# ---- the loop, with fake events --------------------------------------------------------------

class FakeGPU:
    """One stream: what is queued on it, in order, and its clock (seconds). The host clock is
    the stream's clock in ns, so the warm-up (by time, on the host clock) sees each call."""

    def __init__(self, call_s: float, flush_s: float = 1.0):
        self.now, self.log, self.call_s, self.flush_s = 0.0, [], call_s, flush_s

    def host_ns(self) -> int:
        self.now += 1e-9  # reading a clock is not free, but nearly
        return int(self.now * 1e9)

    def call(self):
        self.log.append("call")
        self.now += self.call_s
        return "out"

    def flush(self):
        self.log.append("flush")
        self.now += self.flush_s  # a slow flush: if it were inside a sample, it would show

    def sync(self):
        self.log.append("sync")

    def event(self):
        gpu = self

        class Event:
            def record(self):
                self.at = gpu.now
                gpu.log.append(f"record {id(self)}")

            def elapsed_time(self, end):
                return (end.at - self.at) * 1e3  # milliseconds, as torch's

        return Event()


def samples_of(log: list[str]) -> list[list[str]]:
    """The log from each flush to the sync after it: one sample each."""
    out, current = [], None
    for entry in log:
        if entry == "flush":
            current = [entry]
            out.append(current)
        elif current is not None:
            current.append(entry)
            if entry == "sync":
                current = None
    return out


def test_each_sample_is_flushed_first_outside_the_events_and_blocks_still_divide():
    gpu = FakeGPU(call_s=1e-5)
    clock = cuda.EventClock(gpu.event, gpu.flush)
    settings = TimingSettings(warmup_s=0.002, min_samples=5, max_samples=5, min_sample_s=1e-3)
    timer = Timer(gpu.call, gpu.sync, settings, clock=gpu.host_ns, sample_clock=clock)
    record = timer.measure().to_record()

    assert record["calls_per_sample"] == 100  # 1 ms blocks of 10 µs calls, sized in warm-up
    assert record["timer"] == clocks.CUDA_EVENT
    # the 1 s flush is in no sample: each is the block's events, divided by its calls
    assert record["samples_s"] == pytest.approx([1e-5] * 5, rel=1e-3)
    begin, end = f"record {id(clock.begin)}", f"record {id(clock.end)}"
    samples = samples_of(gpu.log)
    assert len(samples) == 5
    for sample in samples:
        assert sample == ["flush", begin, *["call"] * 100, end, "sync"]
    assert "flush" not in gpu.log[:gpu.log.index("flush")]  # warm-up: calls only, no flush
    assert gpu.log[:gpu.log.index("flush")].count("call") == record["warmup_calls"]


def test_the_host_clock_is_still_the_default_and_sees_the_sync():
    gpu = FakeGPU(call_s=1e-3)
    settings = TimingSettings(warmup_s=0.0, min_samples=3, max_samples=3, min_sample_s=1e-4)
    record = Timer(gpu.call, gpu.sync, settings, clock=gpu.host_ns).measure().to_record()
    assert record["timer"] == HOST and "flush" not in gpu.log
    assert record["samples_s"] == pytest.approx([1e-3] * 3, rel=1e-3)


def test_a_graph_is_captured_once_after_warm_up_and_replayed_for_every_call():
    gpu = FakeGPU(call_s=2e-3)
    captured = []

    def capture(call):
        gpu.log.append("capture")
        captured.append(call)
        return types.SimpleNamespace(replay=lambda: gpu.log.append("replay") or gpu.call())

    clock = cuda.GraphClock(gpu.event, gpu.flush, capture)
    settings = TimingSettings(warmup_s=0.01, min_samples=4, max_samples=4, min_sample_s=1e-4)
    timer = Timer(gpu.call, gpu.sync, settings, clock=gpu.host_ns, sample_clock=clock)
    timer.first_call()
    record = timer.measure().to_record()
    timer.take(2)  # more samples replay the same graph

    assert captured == [gpu.call]  # the prepared call, once
    at = gpu.log.index("capture")
    assert gpu.log[:at].count("call") == record["warmup_calls"] >= 2  # warm-up came first
    assert "replay" not in gpu.log[:at]
    after = [e for e in gpu.log[at + 1:] if e in ("call", "replay")]
    assert after == ["replay", "call"] * 6  # every sampled call is a replay (and its fake work)
    assert record["timer"] == clocks.CUDA_GRAPH
    assert record["samples_s"] == pytest.approx([2e-3] * 4, rel=1e-3)
    timer.release()
    assert clock.graph is None


# ---- through the harness's case path -------------------------------------------------------

class FakeCudaTorch(Adapter):
    """Claims to be torch on CUDA; computes with the NumPy adapter, so the check passes on CPU."""

    name = "test.fake_cuda_torch"
    framework = "torch"
    devices = ("cpu", "cuda")

    def prepare(self, case, inputs):
        numpy_case = dataclasses.replace(case, impl="numpy", device="cpu")
        return registry.get("numpy").prepare(numpy_case, inputs)


FAKE_CASE = Case(impl=FakeCudaTorch.name, device="cuda", heads=2, seq_len=16, head_dim=8)
FAST = TimingSettings(warmup_s=0.001, min_samples=3, max_samples=3, budget_s=0.01)


def test_the_case_path_builds_the_selected_clock_and_the_record_names_it(monkeypatch):
    gpu = FakeGPU(call_s=0.0)
    built = []

    def fake_clock(timer, device):
        built.append((timer, device))
        return cuda.EventClock(gpu.event, gpu.flush)

    monkeypatch.setattr(execute, "sample_clock", fake_clock)
    adapter = FakeCudaTorch()
    prepared = adapter.prepare(FAKE_CASE, execute.problem(FAKE_CASE)[0])
    timer, result = execute.checked_timer(FAKE_CASE, prepared, FAST, framework=adapter.framework)
    assert built == [(clocks.CUDA_EVENT, "cuda")]
    assert result["status"] == "ok" and result["timer"] == clocks.CUDA_EVENT
    assert timer.measure().to_record()["timer"] == clocks.CUDA_EVENT
    assert samples_of(gpu.log)  # the samples were flushed and timed by the fake events


def test_a_failed_capture_is_an_error_never_timed_another_way(monkeypatch):
    gpu = FakeGPU(call_s=0.0)
    # the real capture: on a CPU build torch.cuda.Stream() raises, as a failing capture would
    monkeypatch.setattr(execute, "sample_clock", lambda timer, device: cuda.GraphClock(
        gpu.event, gpu.flush, cuda.capture_graph))
    result = execute.execute(FAKE_CASE, FakeCudaTorch(), FAST_GRAPHS)
    assert result["status"] == "error"
    assert "CUDA graph capture failed" in result["reason"]
    assert "median_s" not in result and "samples_s" not in result


def test_graphs_for_a_case_that_cannot_have_them_are_an_error_in_the_worker_too():
    case = Case(impl="numpy", heads=2, seq_len=16, head_dim=8)
    result = execute.execute(case, registry.get("numpy"), FAST_GRAPHS)
    assert result["status"] == "error" and "CUDA graphs need a CUDA device" in result["reason"]


def test_a_cpu_case_is_timed_on_the_host_clock():
    case = Case(impl="numpy", heads=2, seq_len=16, head_dim=8)
    result = execute.run_case(case, registry.get("numpy"), FAST)
    assert result["status"] == "ok" and result["timer"] == HOST


def test_repeats_keep_the_timer_of_their_record():
    record = {**Samples((1e-3, 2e-3, 3e-3), timer=clocks.CUDA_EVENT).to_record(),
              "repeat_n_samples": [1, 2]}
    assert [part["timer"] for part in split(record)] == [clocks.CUDA_EVENT] * 2
    assert Samples((1e-3,)).to_record()["timer"] is None  # nobody said which clock: unknown


def test_keras_on_jax_may_run_on_a_gpu_and_keras_on_torch_may_not():
    case = Case(impl="keras.ops.jax", device="cuda", dtype="bfloat16")
    assert registry.get("keras.ops.jax").static_reasons(case) == []
    torch_case = dataclasses.replace(case, impl="keras.ops.torch")
    reasons = registry.get("keras.ops.torch").static_reasons(torch_case)
    assert "runs on cpu, not cuda" in " ".join(reasons)


# ---- the report's words come from the constants ---------------------------------------------

def test_the_method_text_names_the_timers_and_the_flush_rule_from_the_constants(monkeypatch):
    records = [{"status": "ok", "timer": clocks.CUDA_EVENT}, {"status": "ok", "timer": HOST},
               {"status": "ok", "timer": None}, {"status": "unsupported", "timer": None}]
    text = method.timer_text(records)
    assert f"{clocks.CUDA_EVENT} (1 cases)" in text and f"{HOST} (2 cases)" in text
    assert "torch.cuda.Event(enable_timing=True)" in text
    monkeypatch.setattr(cuda, "FLUSH_FACTOR", 3)
    monkeypatch.setattr(cuda, "FALLBACK_FLUSH_BYTES", 512 * MIB)
    flush = method.flush_text()
    assert "3× the device's L2" in flush and "512 MiB" in flush
    assert "outside the timed region" in flush


# ---- memory on a GPU, by each framework's own counters (fake libraries) --------------------

def one_call_prepared(log):
    return Prepared(call=lambda: log.append("call") or np.zeros(1), to_numpy=np.asarray,
                    out_dtype=lambda out: "float32")


def test_jax_peak_is_the_rise_of_its_peak_or_none_with_the_bound():
    assert memory.jax_peak_from_stats({"bytes_in_use": 100, "peak_bytes_in_use": 150},
                                      {"peak_bytes_in_use": 900}) == (800, "")
    peak, note = memory.jax_peak_from_stats({"bytes_in_use": 100, "peak_bytes_in_use": 900},
                                            {"peak_bytes_in_use": 900})
    assert peak is None and "cannot reset" in note and "at most 800 bytes" in note
    assert memory.jax_peak_from_stats({}, {})[0] is None


@pytest.mark.parametrize("framework", ["jax", "keras-jax"])
def test_jax_on_a_gpu_is_measured_by_its_device_counters(monkeypatch, framework):
    stats = iter([{"bytes_in_use": 1000, "peak_bytes_in_use": 1000},
                  {"bytes_in_use": 1000, "peak_bytes_in_use": 5000}])
    device = types.SimpleNamespace(memory_stats=lambda: next(stats))
    asked = []
    fake = types.SimpleNamespace(devices=lambda kind: asked.append(kind) or [device, device])
    monkeypatch.setitem(sys.modules, "jax", fake)
    log = []
    assert memory.measure_peak(one_call_prepared(log), framework, "cuda:1") == (
        4000, "jax.Device.memory_stats", "")
    assert asked == ["gpu"] and log == ["call"]


def fake_tf(get_info, reset):
    errors = types.SimpleNamespace(OpError=type("OpError", (Exception,), {}))
    experimental = types.SimpleNamespace(get_memory_info=get_info, reset_memory_stats=reset)
    return types.SimpleNamespace(config=types.SimpleNamespace(experimental=experimental),
                                 errors=errors)


def test_tensorflow_on_a_gpu_uses_its_counters_and_never_memray(monkeypatch):
    infos = iter([{"current": 300, "peak": 300}, {"current": 300, "peak": 1300}])
    resets = []
    monkeypatch.setitem(sys.modules, "tensorflow", fake_tf(lambda dev: next(infos), resets.append))
    log = []
    assert memory.measure_peak(one_call_prepared(log), "tensorflow", "cuda") == (
        1000, "tf.config.experimental.get_memory_info", "")
    assert resets == ["GPU:0"]

    def refuse(dev):
        raise ValueError("no stats")

    monkeypatch.setitem(sys.modules, "tensorflow", fake_tf(lambda dev: {}, refuse))
    log = []
    peak, method_name, note = memory.measure_peak(one_call_prepared(log), "tensorflow", "cuda:0")
    assert (peak, method_name) == (None, "none") and "GPU:0" in note and "no stats" in note
    assert log == []  # nothing measured with memray, which would see host memory
