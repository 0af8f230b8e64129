"""Runs a list of cases in worker processes and appends their records to the run directory.

Cases are grouped by framework family and only one worker exists at a time, so measurements
never compete for the cores. With repeats, each pass over the cases runs in fresh workers.
Figures measured under contention, or implausible within their configuration, are measured
again at the end (harness.analysis.stability). A case that raises, runs out of memory, crashes
its worker or exceeds its timeout becomes that case's record; a fresh worker takes the next case.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from typing import Callable

from harness import registry
from harness.analysis.stability import implausible, is_unstable
from harness.constants import config_key
from harness.measure.repeats import combine, split
from harness.run.process import WorkerGone
from harness.run.record import case_record
from harness.run.worker import Worker
from harness.spec import Case, TimingSettings
from harness.store import RunDir, now_iso

# torch first: the worker that measured the machine's peaks goes on with the cases
FAMILY_ORDER = {"torch": 0, "numpy": 1, "tensorflow": 2}
MAX_REMEASURES = 2  # extra measurements of a contended or implausible figure, at the run's end


def order_cases(cases: list[Case]) -> list[Case]:
    """Group by family (one worker at a time), then by problem so inputs and references are reused."""
    adapters = registry.adapters()

    def key(case: Case):
        family = adapters[case.impl].framework
        return (FAMILY_ORDER.get(family, 9), family, case.level, case.device, case.mode,
                case.problem_key, case.dtype, case.impl)

    return sorted(cases, key=key)


def repeats_of(record: dict) -> int:
    """How many measurements a record combines (records from before repeats hold one)."""
    return len(record.get("repeat_medians_s") or [None])


def finished(record: dict, repeats: int) -> bool:
    """Nothing left to measure: the case failed, is unsupported, or has all its repeats."""
    return record.get("status") != "ok" or repeats_of(record) >= repeats


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
        self.records: dict[str, dict] = {}  # case_id -> its record so far

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

    def _measure(self, case: Case, adapter, earlier: list[dict]) -> dict:
        """One more measurement of `case`, combined with its `earlier` ones into its record."""
        started, t0 = now_iso(), time.perf_counter()
        result = self._result(case, adapter)
        if result["status"] == "ok":
            result = combine([*earlier, result], self.settings.target_ci)
        return case_record(case, result, threads=self.threads, worker=adapter.framework,
                           started_at=started, wall_s=time.perf_counter() - t0, peaks=self.peaks)

    def _keep(self, record: dict) -> None:
        self.run_dir.append(record)
        self.records[record["case_id"]] = record
        self.on_record(record)

    def _repeats_of(self, case_id: str) -> list[dict]:
        record = self.records.get(case_id)
        if not record or record.get("status") != "ok":
            return []
        return split(record)

    def _pass(self, cases: list[Case], repeat: int) -> None:
        """One measurement of every case that still needs repeat number `repeat` (0-based)."""
        adapters = registry.adapters()
        for case in cases:
            record = self.records.get(case.case_id)
            if record is not None and (record["status"] != "ok" or repeats_of(record) > repeat):
                continue  # failed already (no point repeating) or has this repeat
            self.on_start(case)
            earlier = self._repeats_of(case.case_id)
            self._keep(self._measure(case, adapters[case.impl], earlier))
        self._stop_worker()  # the next pass starts fresh processes

    def _suspects(self, cases: list[Case]) -> dict[str, str]:
        """case_id -> why its figure needs another measurement (contended or implausible)."""
        records = [self.records[c.case_id] for c in cases if c.case_id in self.records]
        out = {r["case_id"]: r["instability"] for r in records
               if is_unstable(r) and r.get("instability")}
        out.update({k: v for k, v in implausible(records).items() if k not in out})
        return out

    def _remeasure(self, cases: list[Case]) -> None:
        """Measure suspect figures again, after every other case, at most MAX_REMEASURES times.

        The repeat that was contended (else the slowest) is replaced by the new measurement. A
        figure still implausible at the end is kept, marked `stable: false`.
        """
        adapters = registry.adapters()
        for _ in range(MAX_REMEASURES):
            suspects = self._suspects(cases)
            if not suspects:
                break
            for case in cases:
                if case.case_id not in suspects:
                    continue
                record = self.records[case.case_id]
                self.on_start(case)
                repeats = self._repeats_of(case.case_id)
                worst = next((i for i, r in enumerate(repeats) if r.get("stable") is False),
                             max(range(len(repeats)), key=lambda i: repeats[i]["median_s"]))
                kept = repeats[:worst] + repeats[worst + 1:]
                new = self._measure(case, adapters[case.impl], kept)
                new["remeasured"] = (record.get("remeasured") or 0) + 1
                self._keep(new)
            self._stop_worker()
        for case_id, why in implausible([self.records[c.case_id] for c in cases
                                         if c.case_id in self.records]).items():
            record = self.records[case_id]
            if record.get("stable") is not False:
                self._keep({**record, "stable": False, "instability": why})

    def _stop_worker(self) -> None:
        if self.worker:
            self.worker.stop()
            self.worker = None

    def run(self, cases: list[Case], earlier: dict[str, dict] | None = None) -> list[dict]:
        """Measure every case `settings.repeats` times, in round-robin passes over the suite, each
        pass in fresh worker processes; then measure contended and implausible figures again.
        Every measurement is appended as it exists (the last line of a case is its record).
        `earlier`: the records a resumed run already has (their repeats are kept). Ctrl-C
        propagates after cleanup."""
        ordered = order_cases(cases)
        self.records = dict(earlier or {})
        self.run_dir.open_for_append()
        try:
            for repeat in range(self.settings.repeats):
                self._pass(ordered, repeat)
            self._remeasure(ordered)
        except BaseException:  # Ctrl-C or a bug: the case in flight is abandoned, not waited for
            if self.worker:
                self.worker.kill()
            raise
        else:
            self._stop_worker()
        finally:
            self.worker = None
            self.run_dir.close()
            if self.cache_dir:
                shutil.rmtree(self.cache_dir, ignore_errors=True)
                self.cache_dir = None
        return [self.records[c.case_id] for c in ordered if c.case_id in self.records]
