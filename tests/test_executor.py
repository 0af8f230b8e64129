"""The local Measurer's worker processes: started together before anything is timed, kept for
the re-measurements of their pass, and a GPU worker stopped before another family's cases.
Driven by a fake Worker that records what happens to it, so no process starts. And what one
case's execution says about the harness's own time (`harness_s`)."""
from __future__ import annotations

import dataclasses
import time

import pytest

from harness import registry
from harness.run import executor
from harness.run.execute import run_case
from harness.run.executor import Measurer, OomHistory, RunConfig, worker_families
from harness.run.process import WorkerGone
from harness.spec import Case, TimingSettings
from impls.numpy_ref import NumpyAttention


class FakeWorker:
    """What harness.run.worker.Worker is to the Measurer, with every step written to `log`."""

    log: list[tuple] = []
    fail_start: set[str] = set()

    def __init__(self, family, threads, log_path, cache_dir, wait=True, capped=False):
        self.family, self.info, self.running = family, None, True
        self.log.append(("spawn", family))
        if wait:
            self.ready()

    def ready(self):
        self.log.append(("ready", self.family))
        if self.family in self.fail_start:
            self.running = False
            raise WorkerGone("error", f"{self.family} failed to start")
        self.info = {"family": self.family, "pid": id(self)}
        return self.info

    def alive(self):
        return self.running

    def run(self, case, settings, mem_limit=None):
        self.log.append(("run", self.family, case.device))
        return {"status": "ok"}

    def peaks(self, targets):
        self.log.append(("peaks", self.family))
        return {}

    def stop(self):
        self.log.append(("stop", self.family))
        self.running = False

    kill = stop


class FakeAdapter:
    def __init__(self, framework):
        self.framework = framework

    def static_reasons(self, case):
        return []


FAMILY = {"numpy": "numpy", "torch.sdpa": "torch", "tf.naive": "tensorflow", "jax.sdpa": "jax"}


@pytest.fixture
def measurer(monkeypatch, tmp_path):
    FakeWorker.log, FakeWorker.fail_start = [], set()
    monkeypatch.setattr(executor, "Worker", FakeWorker)
    monkeypatch.setattr(registry, "get", lambda impl: FakeAdapter(FAMILY[impl]))
    m = Measurer(RunConfig(TimingSettings(), 1, None, str(tmp_path / "logs")),
                 on_worker=lambda family, info: FakeWorker.log.append(("reported", family)))
    yield m
    m.close()


def steps(kind):
    return [entry for entry in FakeWorker.log if entry[0] == kind]


def test_workers_start_together_and_are_waited_for_after_all_are_spawned(measurer):
    cases = [Case(impl=i) for i in ("torch.sdpa", "numpy", "tf.naive", "jax.sdpa", "numpy")]
    families = worker_families(cases)
    assert families == ["torch", "numpy", "tensorflow", "jax"]
    measurer.start_workers(families)
    kinds = [entry[0] for entry in FakeWorker.log if entry[0] != "reported"]
    assert kinds == ["spawn"] * 4 + ["ready"] * 4  # every import under way before any wait
    assert [family for _, family in steps("reported")] == families  # each reported once
    measurer.peaks([("cpu", "float32")])
    for case in cases:
        measurer.measure(case)
    assert len(steps("spawn")) == 4 and not steps("stop")  # the cases ran in those workers


def test_a_family_is_measured_again_in_its_worker_of_the_pass(measurer):
    first, other = Case(impl="numpy"), Case(impl="torch.sdpa")
    for case in (first, other, first):  # the last is a re-measurement at the end of the pass
        measurer.measure(case)
    assert steps("spawn") == [("spawn", "numpy"), ("spawn", "torch")]
    measurer.stop()  # the pass ends: the next one starts afresh
    measurer.measure(first)
    assert steps("spawn")[-1] == ("spawn", "numpy") and len(steps("spawn")) == 3


def test_a_worker_that_ran_on_a_gpu_is_stopped_before_another_family_runs(measurer):
    measurer.measure(Case(impl="torch.sdpa", device="cuda"))
    measurer.measure(Case(impl="numpy"))
    assert steps("stop") == [("stop", "torch")]
    assert FakeWorker.log.index(("stop", "torch")) < FakeWorker.log.index(("run", "numpy", "cpu"))
    measurer.measure(Case(impl="torch.sdpa"))
    assert steps("spawn")[-1] == ("spawn", "torch")  # a fresh one for the next torch case


def test_a_worker_that_fails_to_start_fails_its_cases_not_the_others(measurer):
    FakeWorker.fail_start = {"tensorflow"}
    measurer.start_workers(["torch", "tensorflow"])
    assert measurer.measure(Case(impl="torch.sdpa"))["result"]["status"] == "ok"
    result = measurer.measure(Case(impl="tf.naive"))["result"]
    assert result == {"status": "error", "reason": "tensorflow failed to start"}


def test_an_oom_predicts_the_longer_cases_of_its_sweep_for_the_run_and_each_ab_side():
    ooms = OomHistory()
    at = {n: Case(impl="numpy", seq_len=n) for n in (512, 1024, 2048)}
    assert not ooms.note(at[512], {"status": "ok"})
    assert ooms.note(at[1024], {"status": "oom", "reason": "MemoryError"})  # start afresh
    assert ooms.predicted(at[512]) is None and ooms.predicted(at[1024]) is None
    skipped = ooms.predicted(at[2048])
    assert skipped["status"] == "oom" and skipped["predicted"] is True and "1024" in skipped["reason"]
    assert not ooms.note(at[2048], skipped)  # a prediction is not evidence: no fresh worker
    assert ooms.predicted(Case(impl="torch.naive", seq_len=2048)) is None  # its own sweep


# --- where a case's untimed time goes: harness_s ------------------------------------------

class SleepyNumpy(NumpyAttention):
    """NumPy's attention with a slow `prepare` and a slow call, to see each land in its place."""

    def prepare(self, case, inputs):
        time.sleep(SLEEP_S)
        prepared = super().prepare(case, inputs)
        call = prepared.call

        def slow_call():
            time.sleep(SLEEP_S)
            return call()
        return dataclasses.replace(prepared, call=slow_call)


SLEEP_S = 0.2


def test_harness_s_names_each_untimed_step_and_leaves_the_timed_calls_out():
    settings = TimingSettings(warmup_s=0.001, min_samples=2, max_samples=2, budget_s=0.01)
    result = run_case(Case(impl="numpy", heads=2, seq_len=16, head_dim=8), SleepyNumpy(), settings)
    steps = result["harness_s"]
    assert result["status"] == "ok" and set(steps) == {"truth", "prepare", "check",
                                                        "kernel_pass", "memory_pass"}
    assert steps["prepare"] >= SLEEP_S and steps["memory_pass"] >= SLEEP_S  # one call each
    assert steps["check"] < SLEEP_S / 2  # the checked first call is timed, not the check's
    assert result["timed_s"] >= SLEEP_S * (result["warmup_calls"] + result["n_samples"])
