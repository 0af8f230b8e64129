"""Where cases run. The runner hands an executor batches of cases; the executor yields each
case's measurement as it finishes, in any order, and the runner turns measurements into
records. Executors are chosen by name (harness.run.executors): `local` runs the cases here,
one at a time; `dask` spreads them over a Dask cluster (harness.run.dask_executor). Another
engine is one more class with the methods of `Executor`.

Wherever cases run, a `Measurer` runs them: one case at a time, in a worker process of its
framework family (harness.run.worker), so a crash, hang or out-of-memory costs one case.
"""
from __future__ import annotations

import contextlib
import dataclasses
import shutil
import socket
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Protocol

from harness import registry
from harness.case import series_key, sweep_len
from harness.run.process import WorkerGone
from harness.run.worker import Worker
from harness.spec import Case, TimingSettings
from harness.store.env import host_env


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """What every measurement of a run shares, wherever it runs (sent to remote workers)."""

    settings: TimingSettings
    threads: int
    mem_limit: int | None
    logs: str  # the run's logs directory; a host that cannot see it logs to its temp directory

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "settings": dataclasses.asdict(self.settings)}

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        return cls(**{**data, "settings": TimingSettings(**data["settings"])})


class ExecutorError(ValueError):
    """An executor that cannot be used as asked; str() is one line for the user."""


def precise_now() -> str:
    """A start time to the microsecond: intervals of cases on one worker can be told apart."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


class OomHistory:
    """What `--mem-limit` promises beyond the cap itself, wherever cases run (a run's Measurer,
    each A/B side): once an implementation's configuration ran out of memory at some length,
    the longer cases of its sweep are recorded as predicted out of memory, not tried."""

    def __init__(self):
        self.smallest: dict[tuple, int] = {}  # series_key -> the least sweep_len that ran out

    def predicted(self, case: Case) -> dict | None:
        """The result of `case` if it is predicted to run out of memory, else None."""
        smallest = self.smallest.get(series_key(case))
        if smallest is None or sweep_len(case) <= smallest:
            return None
        return {"status": "oom", "predicted": True,
                "reason": f"skipped: predicted out of memory, as seq_len {smallest} of the same "
                          f"configuration already ran out"}

    def note(self, case: Case, result: dict) -> bool:
        """Remember `result` of `case`; True if it ran out of memory (not predicted to): its
        worker may hold fragments and should start afresh."""
        if result.get("status") != "oom" or result.get("predicted"):
            return False
        key, n = series_key(case), sweep_len(case)
        self.smallest[key] = min(self.smallest.get(key, n), n)
        return True


class Measurer:
    """Measures cases one at a time, each in a worker process of its family. Lives where the
    cases run: in the runner's process (local) or in each Dask worker process. A measurement
    is a dict: `result` (what the worker said, or why there was none), `started_at`, `wall_s`,
    `host`, `workers` (what the workers started since the last measurement reported) and, the
    first time, `host_env` (this host's environment and fingerprint).

    Workers live until `stop` (the end of a pass), so a figure measured again at the end of a
    run is measured in its family's worker of that pass, not in a process started for it.
    `start_workers` starts the families a batch needs all at once, before anything is timed:
    their imports overlap. Only one worker runs a case at a time, so cases never compete for
    the cores; the others wait idle. A worker that ran a case on a GPU is stopped when another
    family takes over: its allocator would keep device memory the next cases need.
    """

    def __init__(self, config: RunConfig, log_suffix: str = "",
                 on_worker: Callable[[str, dict], None] | None = None):
        self.config = config
        self.log_suffix = log_suffix
        self.on_worker = on_worker  # told at once when a worker starts (its pid, its threads)
        self.workers: dict[str, Worker] = {}  # family -> its worker in this pass
        self.current: str | None = None  # the family of the last case's worker
        self.on_gpu: set[str] = set()  # families whose worker ran a case on a GPU
        self.ooms = OomHistory()
        self.cache_dir: str | None = None  # the truth this process's workers share
        self.lock = threading.Lock()  # one case at a time, however many threads call
        self.host = socket.gethostname()
        self.started: dict[str, dict] = {}
        self.host_reported = False

    def _logs(self) -> Path:
        logs = Path(self.config.logs)
        if not logs.parent.is_dir():  # another host, without the run directory
            logs = Path(tempfile.gettempdir()) / "attnbench-logs"
        logs.mkdir(parents=True, exist_ok=True)
        return logs

    def _spawn(self, family: str) -> Worker:
        """A new worker of `family`, started but not yet waited for."""
        self._discard(family)
        if self.cache_dir is None:
            self.cache_dir = tempfile.mkdtemp(prefix="attnbench-truth-")
        log = self._logs() / f"worker-{family}{self.log_suffix}.log"
        worker = Worker(family, self.config.threads, str(log), self.cache_dir, wait=False,
                        capped=self.config.mem_limit is not None)
        self.workers[family] = worker
        return worker

    def _ready(self, worker: Worker) -> Worker:
        """`worker`, once it is ready; its start-up info is reported the first time."""
        if worker.info is not None:
            return worker
        try:
            info = worker.ready()
        except WorkerGone:
            self.workers.pop(worker.family, None)
            raise
        self.started[worker.family] = info
        if self.on_worker:
            self.on_worker(worker.family, info)
        return worker

    def _live(self, family: str) -> bool:
        worker = self.workers.get(family)
        return worker is not None and worker.alive()

    def _discard(self, family: str, kill: bool = False) -> None:
        worker = self.workers.pop(family, None)
        self.on_gpu.discard(family)
        if worker is not None:
            worker.kill() if kill else worker.stop()

    def start_workers(self, families: list[str]) -> None:
        """Start the workers of `families` not yet running, all at once, and wait for each.
        One that fails to start is left out: the first case that needs it says why."""
        with self.lock:
            for worker in [self._spawn(f) for f in families if not self._live(f)]:
                with contextlib.suppress(WorkerGone):  # _ready forgot it; its cases will say why
                    self._ready(worker)

    def _worker_for(self, family: str) -> Worker:
        if self.current in self.on_gpu and self.current != family:
            self._discard(self.current)
        self.current = family
        return self._ready(self.workers[family] if self._live(family) else self._spawn(family))

    def _report(self) -> dict:
        out = {"host": self.host, "workers": self.started}
        self.started = {}
        if not self.host_reported:
            out["host_env"] = host_env(self.config.threads)
            self.host_reported = True
        return out

    def peaks(self, targets: list[tuple[str, str]]) -> dict:
        """Matmul and bandwidth peaks of this host for the (device, dtype) pairs."""
        with self.lock:
            try:
                peaks = self._worker_for("torch").peaks(targets)
            except WorkerGone as gone:
                self._discard("torch")
                peaks = {"error": gone.reason}
            return {"peaks": peaks, **self._report()}

    def _result(self, case: Case, adapter) -> dict:
        reasons = adapter.static_reasons(case)
        if reasons:  # known without a worker: missing package, device, dtype...
            return {"status": "unsupported", "reason": "; ".join(reasons)}
        predicted = self.ooms.predicted(case)
        if predicted:
            return predicted
        family = adapter.framework
        try:
            worker = self._worker_for(family)
            if case.device.startswith("cuda"):
                self.on_gpu.add(family)
            result = worker.run(case, self.config.settings, self.config.mem_limit)
        except WorkerGone as gone:
            self._discard(family)
            result = {"status": gone.status, "reason": gone.reason}
        if self.ooms.note(case, result):  # a worker that hit its limit starts afresh
            self._discard(family, kill=True)
        return result

    def measure(self, case: Case) -> dict:
        with self.lock:
            started, t0 = precise_now(), time.perf_counter()
            result = self._result(case, registry.get(case.impl))
            return {"result": result, "started_at": started, "wall_s": time.perf_counter() - t0,
                    **self._report()}

    def stop(self) -> None:
        """End the worker processes (the next pass of a run starts fresh ones)."""
        with self.lock:
            for family in list(self.workers):
                self._discard(family)
            self.current = None

    def abort(self) -> None:
        """Kill the worker processes now, even mid-case (without waiting for the case's lock)."""
        for worker in list(self.workers.values()):
            if worker.alive():
                worker.process.kill()

    def close(self) -> None:
        self.stop()
        if self.cache_dir:
            shutil.rmtree(self.cache_dir, ignore_errors=True)
            self.cache_dir = None


def worker_families(cases: list[Case]) -> list[str]:
    """The worker families `cases` need, in their order (cases known unsupported need none)."""
    families: dict[str, None] = {}
    for case in cases:
        adapter = registry.get(case.impl)
        if not adapter.static_reasons(case):
            families.setdefault(adapter.framework)
    return list(families)


class Executor(Protocol):
    """Runs the measurements of a run. `start` before anything else; `close` at the end, with
    `abandon` after Ctrl-C or an error (outstanding work is cancelled, not waited for)."""

    name: str

    def start(self, config: RunConfig,
              on_worker: Callable[[str, dict], None] | None = None) -> None:
        """`on_worker` hears of each worker process as it starts, where the executor can tell
        (a local one can; a remote one reports its workers with their measurements)."""

    def prepare(self, cases: list[Case]) -> None:
        """Start what `cases` will need before anything of theirs is timed (a local executor
        starts every family's worker at once, so their imports overlap; a remote one may
        start nothing and let its workers start as cases arrive)."""

    def peaks(self, targets: list[tuple[str, str]]) -> list[dict]:
        """One measurement (with `peaks`) per host the cases will run on."""

    def measure(self, cases: list[Case],
                on_start: Callable[[Case], None]) -> Iterator[tuple[Case, dict]]:
        """Each case with its measurement, as they finish."""

    def end_pass(self) -> None:
        """A pass over the cases is done: the next batch starts in fresh worker processes."""

    def close(self, abandon: bool = False) -> None: ...

    def describe(self) -> dict:
        """What env.json keeps about the executor."""


class LocalExecutor:
    """Every case in this process's Measurer, in the order given."""

    name = "local"

    def __init__(self):
        self.measurer: Measurer | None = None

    def start(self, config: RunConfig, on_worker=None) -> None:
        if self.measurer is None:
            self.measurer = Measurer(config, on_worker=on_worker)

    def prepare(self, cases) -> None:
        self.measurer.start_workers(worker_families(cases))

    def peaks(self, targets):
        return [self.measurer.peaks(targets)]

    def measure(self, cases, on_start):
        for case in cases:
            on_start(case)
            yield case, self.measurer.measure(case)

    def end_pass(self) -> None:
        self.measurer.stop()

    def close(self, abandon: bool = False) -> None:
        if self.measurer:
            if abandon:  # the case in flight is abandoned, not waited for
                self.measurer.abort()
            self.measurer.close()
            self.measurer = None

    def describe(self) -> dict:
        return {"name": self.name, "host": socket.gethostname()}
