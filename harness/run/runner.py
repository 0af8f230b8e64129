"""Runs a list of cases and appends their records to the run directory.

Where the cases run is the executor's business (harness.run.executor: here, or on a Dask
cluster); what a run measures is the runner's: passes, repeats, re-measurement, records.
Cases are grouped by framework family, so a worker process serves a run of cases. With
repeats, each pass over the cases runs in fresh workers. Figures measured under contention, or
implausible within their configuration, are measured again at the end, in the last pass's
workers (harness.analysis.stability). A case that raises, runs out of memory, crashes its
worker or exceeds its timeout becomes that case's record; a fresh worker takes the next case.
"""
from __future__ import annotations

from typing import Callable

from harness import registry
from harness.analysis.stability import implausible, is_unstable
from harness.measure.repeats import combine, split
from harness.run.executor import Executor, LocalExecutor, RunConfig
from harness.run.record import case_record
from harness.spec import Case, TimingSettings
from harness.store import RunDir
from harness.store.schema import DECLARED

# torch first: the worker that measured the machine's peaks goes on with the cases
FAMILY_ORDER = {"torch": 0, "numpy": 1, "tensorflow": 2}
MAX_REMEASURES = 2  # extra measurements of a contended or implausible figure, at the run's end


def order_cases(cases: list[Case]) -> list[Case]:
    """Group by family (its cases in a row, in its worker), then by problem so inputs and
    references are reused."""
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
    """Runs cases into a RunDir through an executor (local by default; harness.run.executor).
    Callbacks let the CLI show progress and keep env.json without the runner knowing how."""

    def __init__(self, run_dir: RunDir, settings: TimingSettings, threads: int,
                 mem_limit: int | None = None, peaks: dict | None = None,
                 on_start: Callable[[Case], None] | None = None,
                 on_record: Callable[[dict], None] | None = None,
                 on_worker: Callable[[str, dict], None] | None = None,
                 executor: Executor | None = None, hosts: dict | None = None,
                 on_host: Callable[[str, dict], None] | None = None):
        self.run_dir = run_dir
        self.settings = settings
        self.threads = threads
        self.mem_limit = mem_limit
        self.peaks = peaks or {}
        self.on_start = on_start or (lambda case: None)
        self.on_record = on_record or (lambda record: None)
        self.on_worker = on_worker or (lambda family, info: None)
        self.on_host = on_host or (lambda host, entry: None)
        self.executor = executor or LocalExecutor()
        self.started = False
        self.hosts: dict[str, dict] = {h: dict(e) for h, e in (hosts or {}).items()}
        self.records: dict[str, dict] = {}  # case_id -> its record so far

    def _start(self) -> None:
        if not self.started:
            self.executor.start(RunConfig(self.settings, self.threads, self.mem_limit,
                                          str(self.run_dir.logs.resolve())), self.on_worker)
            self.started = True

    def close(self, abandon: bool = False) -> None:
        """End the executor's processes (a run ends them itself; this is for an early exit)."""
        if self.started:
            self.started = False
            self.executor.close(abandon)

    def _absorb(self, measured: dict) -> None:
        """Keep what a measurement says about where it ran: the host's environment, peaks and
        worker processes (env.json's `hosts`, keyed by host, then by executor worker)."""
        host = measured.get("host")
        if host is None:
            return
        entry = self.hosts.setdefault(host, {})
        changed = bool(measured.get("host_env") or measured.get("workers") or
                       "peaks" in measured)
        entry.update(measured.get("host_env") or {})
        if "peaks" in measured:
            entry["peaks"] = measured["peaks"]
        slot = entry.setdefault("workers", {}).setdefault(measured.get("slot") or "local", {})
        for family, info in (measured.get("workers") or {}).items():
            slot[family] = info
            self.on_worker(family, info)
        if measured.get("slot_info") and slot.get("process") != measured["slot_info"]:
            slot["process"] = measured["slot_info"]
            changed = True
        if changed:
            self.on_host(host, entry)

    def _peaks_of(self, host: str | None) -> dict:
        peaks = self.hosts.get(host, {}).get("peaks")
        return peaks if isinstance(peaks, dict) and "error" not in peaks else self.peaks

    def measure_peaks(self, cases: list[Case]) -> dict:
        """Matmul and bandwidth peaks for the (device, dtype) pairs the cases use, on every host
        the executor runs cases on; the run's own (env.json `peaks`) when there is one host."""
        self._start()
        self.executor.prepare(cases)  # every worker up before the peaks are timed
        measured = self.executor.peaks(sorted({(c.device, c.dtype) for c in cases}))
        for one in measured:
            self._absorb(one)
        self.peaks = measured[0]["peaks"] if len(measured) == 1 else {}
        return self.peaks

    def _record(self, case: Case, measured: dict, earlier: list[dict]) -> dict:
        """The record of one more measurement of `case`, combined with its `earlier` ones."""
        result = measured["result"]
        if result["status"] == "ok":
            result = combine([*earlier, result], self.settings.target_ci)
        record = case_record(case, result, threads=self.threads,
                             worker=registry.adapters()[case.impl].framework,
                             started_at=measured["started_at"], wall_s=measured["wall_s"],
                             peaks=self._peaks_of(measured.get("host")))
        record.update(host=measured.get("host"), executor_worker=measured.get("slot"))
        return record

    def _batch(self, cases: list[Case], earlier: dict[str, list[dict]],
               extra: dict[str, dict] | None = None) -> None:
        """Measure `cases` once more through the executor, keeping each record as it comes."""
        self.executor.prepare(cases)
        for case, measured in self.executor.measure(cases, self.on_start):
            self._absorb(measured)
            record = self._record(case, measured, earlier[case.case_id])
            record.update((extra or {}).get(case.case_id, {}))
            self._keep(record)

    def _keep(self, record: dict) -> None:
        self.run_dir.append(record)
        self.records[record["case_id"]] = record
        self.on_record(record)

    def _repeats_of(self, case_id: str) -> list[dict]:
        record = self.records.get(case_id)
        if not record or record.get("status") != "ok":
            return []
        # a stored record may carry keys this version does not declare (a newer version's, a
        # hand edit): the repeats it goes on from are built from the declared ones
        return split({k: v for k, v in record.items() if k in DECLARED})

    def _pass(self, cases: list[Case], repeat: int) -> None:
        """One measurement of every case that still needs repeat number `repeat` (0-based)."""
        def needed(case: Case) -> bool:  # not failed already (no point repeating), nor has it
            record = self.records.get(case.case_id)
            return record is None or (record["status"] == "ok" and repeats_of(record) <= repeat)

        todo = [case for case in cases if needed(case)]
        self._batch(todo, {case.case_id: self._repeats_of(case.case_id) for case in todo})

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
        for _ in range(MAX_REMEASURES):
            suspects = self._suspects(cases)
            if not suspects:
                break
            todo = [case for case in cases if case.case_id in suspects]
            kept, extra = {}, {}
            for case in todo:
                record = self.records[case.case_id]
                repeats = self._repeats_of(case.case_id)
                worst = next((i for i, r in enumerate(repeats) if r.get("stable") is False),
                             max(range(len(repeats)), key=lambda i: repeats[i]["median_s"]))
                kept[case.case_id] = repeats[:worst] + repeats[worst + 1:]
                extra[case.case_id] = {"remeasured": (record.get("remeasured") or 0) + 1}
            self._batch(todo, kept, extra)
        for case_id, why in implausible([self.records[c.case_id] for c in cases
                                         if c.case_id in self.records]).items():
            record = self.records[case_id]
            if record.get("stable") is not False:
                self._keep({**record, "stable": False, "instability": why})

    def run(self, cases: list[Case], earlier: dict[str, dict] | None = None) -> list[dict]:
        """Measure every case `settings.repeats` times, in round-robin passes over the suite, each
        pass in fresh worker processes; then measure contended and implausible figures again,
        in the workers of the last pass.
        Every measurement is appended as it exists (the last line of a case is its record).
        `earlier`: the records a resumed run already has (their repeats are kept). Ctrl-C
        propagates after cleanup."""
        ordered = order_cases(cases)
        self.records = dict(earlier or {})
        self.run_dir.open_for_append()
        try:
            self._start()
            for repeat in range(self.settings.repeats):
                if repeat:
                    self.executor.end_pass()  # each pass in fresh worker processes
                self._pass(ordered, repeat)
            self._remeasure(ordered)  # in the last pass's workers
        except BaseException:  # Ctrl-C or a bug: the cases in flight are abandoned, not waited for
            self.close(abandon=True)
            raise
        else:
            self.close()
        finally:
            self.run_dir.close()
        return [self.records[c.case_id] for c in ordered if c.case_id in self.records]
