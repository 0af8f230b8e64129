"""A suite's cases as pytest-benchmark benchmarks: the same adapters, inputs and output check as
`attnbench run`, timed by pytest-benchmark's fixture, so its storage and comparison work as usual:

    python -m pytest tests/benchmarks/test_pytest_benchmark.py -m bench --benchmark-only \\
        --benchmark-autosave
    python -m pytest tests/benchmarks/test_pytest_benchmark.py -m bench --benchmark-only \\
        --benchmark-compare --benchmark-compare-fail=median:10%

$ATTNBENCH_BENCH_SUITE picks the suite (default: smoke; `ci` on a GPU runner). Each case is
checked against the float64 reference first: a wrong result fails its test instead of being
timed. Cases this machine cannot run are skipped with the adapter's reasons; TensorFlow cases are
skipped because TensorFlow must not share a process with PyTorch (`attnbench run` isolates them).

The checked first call and the warm-up by time are the harness's own (`checked_timer`, then
`Timer.warm_up`, as in `attnbench run`; pytest-benchmark's warm-up is off by default); then the
timer is right for the device: on CPU pytest-benchmark's perf_counter; on CUDA a clock that synchronises the device
before it is read, so a round of queued launches is timed to the end of its last kernel, as the
harness's blocks are (a sync per call would add the sync's latency to every call). The regular
fixture (not `pedantic`) keeps pytest-benchmark's calibration and its --benchmark-min-rounds,
--benchmark-max-time and --benchmark-warmup options working. The intra-op thread count is the
harness's default (the physical cores) unless $ATTNBENCH_BENCH_THREADS says otherwise.
"""
import os
import time

import pytest

from harness import registry
from harness.measure.flops import case_flops
from harness.problem.truth import problem
from harness.run.execute import checked_timer
from harness.spec import load_suite
from harness.store import physical_cores

pytestmark = pytest.mark.bench
SUITE = os.environ.get("ATTNBENCH_BENCH_SUITE", "smoke")
THREADS = int(os.environ.get("ATTNBENCH_BENCH_THREADS") or physical_cores())


def cuda_synchronized_clock() -> float:
    """perf_counter after the device finished what was queued (pytest-benchmark's `timer`)."""
    import torch

    torch.cuda.synchronize()
    return time.perf_counter()


def _params():
    adapters = registry.adapters()
    suite = load_suite(SUITE, set(adapters))
    params = []
    for case in suite.cases():
        group = (f"{case.device} {case.dtype} b{case.batch} h{case.heads} n{case.seq_len} "
                 f"d{case.head_dim} {'causal' if case.causal else 'full'}")
        mark = {"group": group, "disable_gc": True}
        if case.device.startswith("cuda"):
            mark["timer"] = cuda_synchronized_clock
        params.append(pytest.param(case, suite.timing, id=case.case_id,
                                   marks=pytest.mark.benchmark(**mark)))
    return params


@pytest.fixture(scope="module", autouse=True)
def _same_threads_as_the_harness():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("case, timing", _params())
def test_attention(benchmark, case, timing):
    adapter = registry.get(case.impl)
    if adapter.framework == "tensorflow":
        pytest.skip("TensorFlow must not share a process with PyTorch: use `attnbench run`")
    reasons = adapter.unsupported(case)
    if reasons:
        pytest.skip("; ".join(reasons))
    inputs, _ = problem(case)
    prepared = adapter.prepare(case, inputs)
    try:
        timer, checked = checked_timer(case, prepared, timing)
        assert checked["status"] == "ok", f"{case.case_id}: {checked['reason']}"
        timer.warm_up()
        benchmark.extra_info.update(case_id=case.case_id, impl=case.impl, dtype=case.dtype,
                                    device=case.device, seq_len=case.seq_len,
                                    causal=case.causal, flops=case_flops(case), threads=THREADS,
                                    max_abs_err=checked["max_abs_err"],
                                    tolerance=checked["tolerance"])
        benchmark(prepared.call)
    finally:
        prepared.close()
