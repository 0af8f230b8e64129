"""Where cases run. The runner hands an executor batches of cases; the executor yields each
case's measurement as it finishes, in any order, and the runner turns measurements into
records. Executors are chosen by name (harness.run.executors): `local` runs the cases here,
one at a time; `dask` spreads them over a Dask cluster (harness.run.dask_executor). Another
engine is one more class with the methods of `Executor`.

Wherever cases run, a `Measurer` runs them: one case at a time, in a worker process of its
framework family (harness.run.worker), so a crash, hang or out-of-memory costs one case.
"""
from __future__ import annotations

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
from harness.constants import config_key
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


class Measurer:
    """Measures cases one at a time, each in a worker process of its family; only one worker
    exists at a time, so cases never compete for the cores. Lives where the cases run: in the
    runner's process (local) or in each Dask worker process. A measurement is a dict: `result`
    (what the worker said, or why there was none), `started_at`, `wall_s`, `host`, `workers`
    (what the workers started since the last measurement reported) and, the first time,
    `host_env` (this host's environment and fingerprint)."""

    def __init__(self, config: RunConfig, log_suffix: str = "",
                 on_worker: Callable[[str, dict], None] | None = None):
        self.config = config
        self.log_suffix = log_suffix
        self.on_worker = on_worker  # told at once when a worker starts (its pid, its threads)
        self.worker: Worker | None = None
        self.oom_at: dict[tuple, int] = {}
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

    def _worker_for(self, family: str) -> Worker:
        if self.worker and (self.worker.family != family or not self.worker.alive()):
            self.worker.stop()
            self.worker = None
        if self.worker is None:
            if self.cache_dir is None:
                self.cache_dir = tempfile.mkdtemp(prefix="attnbench-truth-")
            log = self._logs() / f"worker-{family}{self.log_suffix}.log"
            self.worker = Worker(family, self.config.threads, str(log), self.cache_dir)
            self.started[family] = self.worker.info
            if self.on_worker:
                self.on_worker(family, self.worker.info)
        return self.worker

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
                self.worker = None
                peaks = {"error": gone.reason}
            return {"peaks": peaks, **self._report()}

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
            result = self._worker_for(adapter.framework).run(case, self.config.settings,
                                                             self.config.mem_limit)
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

    def measure(self, case: Case) -> dict:
        with self.lock:
            started, t0 = precise_now(), time.perf_counter()
            result = self._result(case, registry.get(case.impl))
            return {"result": result, "started_at": started, "wall_s": time.perf_counter() - t0,
                    **self._report()}

    def stop(self) -> None:
        """End the worker process (the next pass of a run starts fresh ones)."""
        with self.lock:
            if self.worker:
                self.worker.stop()
                self.worker = None

    def abort(self) -> None:
        """Kill the worker process now, even mid-case (without waiting for the case's lock)."""
        worker = self.worker
        if worker and worker.alive():
            worker.process.kill()

    def close(self) -> None:
        self.stop()
        if self.cache_dir:
            shutil.rmtree(self.cache_dir, ignore_errors=True)
            self.cache_dir = None


class Executor(Protocol):
    """Runs the measurements of a run. `start` before anything else; `close` at the end, with
    `abandon` after Ctrl-C or an error (outstanding work is cancelled, not waited for)."""

    name: str

    def start(self, config: RunConfig,
              on_worker: Callable[[str, dict], None] | None = None) -> None:
        """`on_worker` hears of each worker process as it starts, where the executor can tell
        (a local one can; a remote one reports its workers with their measurements)."""

    def peaks(self, targets: list[tuple[str, str]]) -> list[dict]:
        """One measurement (with `peaks`) per host the cases will run on."""

    def measure(self, cases: list[Case],
                on_start: Callable[[Case], None]) -> Iterator[tuple[Case, dict]]:
        """Each case with its measurement, as they finish."""

    def end_pass(self) -> None:
        """The batch so far is done: the next one starts in fresh worker processes."""

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
