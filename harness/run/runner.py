"""Runs a list of cases in worker processes and appends one record per case to the run directory.

Cases are grouped by framework family and only one worker exists at a time, so measurements
never compete for the cores. A case that raises, runs out of memory, crashes its worker or
exceeds its timeout becomes that case's record; a fresh worker takes the next case.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from typing import Callable

from harness import registry
from harness.constants import config_key
from harness.run.process import WorkerGone
from harness.run.record import case_record
from harness.run.worker import Worker
from harness.spec import Case, TimingSettings
from harness.store import RunDir, now_iso

# torch first: the worker that measured the machine's peaks goes on with the cases
FAMILY_ORDER = {"torch": 0, "numpy": 1, "tensorflow": 2}


def order_cases(cases: list[Case]) -> list[Case]:
    """Group by family (one worker at a time), then by problem so inputs and references are reused."""
    adapters = registry.adapters()

    def key(case: Case):
        family = adapters[case.impl].framework
        return (FAMILY_ORDER.get(family, 9), family, case.level, case.device, case.mode,
                case.problem_key, case.dtype, case.impl)

    return sorted(cases, key=key)


class Runner:
    """Runs cases into a RunDir. Callbacks let the CLI show progress without the runner knowing."""

    def __init__(self, run_dir: RunDir, settings: TimingSettings, threads: int,
                 mem_limit: int | None = None, peaks: dict | None = None,
                 on_start: Callable[[Case], None] | None = None,
                 on_record: Callable[[dict], None] | None = None,
                 on_worker: Callable[[str, dict], None] | None = None):
        self.run_dir = run_dir
        self.settings = settings
        self.threads = threads
        self.mem_limit = mem_limit
        self.peaks = peaks or {}
        self.on_start = on_start or (lambda case: None)
        self.on_record = on_record or (lambda record: None)
        self.on_worker = on_worker or (lambda family, info: None)
        self.worker: Worker | None = None
        self.oom_at: dict[tuple, int] = {}
        self.cache_dir: str | None = None  # the truth the run's workers share (harness.problem.truth)

    def _worker_for(self, family: str) -> Worker:
        if self.worker and (self.worker.family != family or not self.worker.alive()):
            self.worker.stop()
            self.worker = None
        if self.worker is None:
            if self.cache_dir is None:
                self.cache_dir = tempfile.mkdtemp(prefix="attnbench-truth-")
            log = self.run_dir.logs / f"worker-{family}.log"
            self.run_dir.logs.mkdir(parents=True, exist_ok=True)
            self.worker = Worker(family, self.threads, str(log), self.cache_dir)
            self.on_worker(family, self.worker.info)
        return self.worker

    def measure_peaks(self, cases: list[Case]) -> dict:
        """Matmul and bandwidth peaks for the (device, dtype) pairs the cases use."""
        targets = sorted({(c.device, c.dtype) for c in cases})
        try:
            self.peaks = self._worker_for("torch").peaks(targets)
        except WorkerGone as gone:
            self.worker = None
            self.peaks = {"error": gone.reason}
        return self.peaks

    def _predicted_oom(self, case: Case) -> dict | None:
        smallest = self.oom_at.get(config_key(case))
        if smallest is None or case.seq_len <= smallest:
            return None
        return {"status": "oom", "predicted": True,
                "reason": f"skipped: predicted out of memory, as seq_len {smallest} of the same "
                          f"configuration already ran out"}

    def _result(self, case: Case, adapter) -> dict:
        reasons = adapter.static_reasons(case)
        if reasons:  # known without a worker: missing package, device, dtype...
            return {"status": "unsupported", "reason": "; ".join(reasons)}
        predicted = self._predicted_oom(case)
        if predicted:
            return predicted
        try:
            result = self._worker_for(adapter.framework).run(case, self.settings, self.mem_limit)
        except WorkerGone as gone:
            self.worker = None
            result = {"status": gone.status, "reason": gone.reason}
        if result["status"] == "oom":
            key = config_key(case)
            self.oom_at[key] = min(self.oom_at.get(key, case.seq_len), case.seq_len)
            if self.worker:  # a worker that hit its limit may hold fragments: start afresh
                self.worker.kill()
                self.worker = None
        return result

    def run_one(self, case: Case) -> dict:
        adapter = registry.adapters()[case.impl]
        started, t0 = now_iso(), time.perf_counter()
        result = self._result(case, adapter)
        return case_record(case, result, threads=self.threads, worker=adapter.framework,
                           started_at=started, wall_s=time.perf_counter() - t0, peaks=self.peaks)

    def run(self, cases: list[Case]) -> list[dict]:
        """Run every case, appending each record as it exists. Ctrl-C propagates after cleanup."""
        records = []
        self.run_dir.open_for_append()
        try:
            for case in order_cases(cases):
                self.on_start(case)
                record = self.run_one(case)
                self.run_dir.append(record)
                records.append(record)
                self.on_record(record)
        except BaseException:  # Ctrl-C or a bug: the case in flight is abandoned, not waited for
            if self.worker:
                self.worker.kill()
            raise
        else:
            if self.worker:
                self.worker.stop()
        finally:
            self.worker = None
            self.run_dir.close()
            if self.cache_dir:
                shutil.rmtree(self.cache_dir, ignore_errors=True)
                self.cache_dir = None
        return records
