"""Runs a list of cases in worker processes and appends one record per case to the run directory.

Cases are grouped by framework family and only one worker exists at a time, so measurements
never compete for the cores. A case that raises, runs out of memory, crashes its worker or
exceeds its timeout becomes that case's record; a fresh worker takes the next case.
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import time
from contextlib import contextmanager
from typing import Callable

from harness import registry
from harness.flops import case_flops, tflops
from harness.spec import Case
from harness.store import RunDir, make_record, now_iso
from harness.timing import TimingSettings
from harness.worker import worker_env, worker_main

FAMILY_ORDER = {"numpy": 0, "torch": 1, "tensorflow": 2}
WORKER_START_TIMEOUT_S = 180.0


class WorkerGone(Exception):
    """The worker died or stopped answering; the message says how."""

    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


@contextmanager
def _environ(extra: dict[str, str]):
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _describe_exit(code: int | None) -> tuple[str, str]:
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        if -code == signal.SIGKILL:
            return "oom", f"worker killed by {name} (most likely the system's out-of-memory killer)"
        return "error", f"worker crashed with signal {name}"
    return "error", f"worker exited unexpectedly with code {code}"


class Worker:
    """One spawned process for one framework family."""

    def __init__(self, family: str, threads: int, log_path: str | None):
        ctx = multiprocessing.get_context("spawn")
        self.family = family
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=worker_main, args=(child, family, threads, log_path),
                                   daemon=True, name=f"attnbench-{family}")
        with _environ(worker_env(family, threads)):
            self.process.start()
        child.close()
        self.info = self._receive(WORKER_START_TIMEOUT_S, "starting")["info"]

    def _receive(self, timeout_s: float, doing: str):
        if not self.conn.poll(timeout_s):
            if self.process.is_alive():
                self.kill()
                raise WorkerGone("timeout", f"no result within {timeout_s:g} s while {doing}; "
                                            f"worker killed")
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            self.process.join(5)
            raise WorkerGone(*_describe_exit(self.process.exitcode)) from None

    def run(self, case: Case, settings: TimingSettings) -> dict:
        try:
            self.conn.send(("run", case.to_dict(), dataclasses.asdict(settings)))
        except (BrokenPipeError, OSError):
            self.process.join(5)
            raise WorkerGone(*_describe_exit(self.process.exitcode)) from None
        return self._receive(settings.timeout_s, "running the case")

    def probe(self, case: Case, timeout_s: float = 120.0) -> list[str]:
        """The library's reasons why it cannot run `case` (empty: it can)."""
        self.conn.send(("probe", case.to_dict(), None))
        return self._receive(timeout_s, "asking the library")

    def alive(self) -> bool:
        return self.process.is_alive()

    def stop(self) -> None:
        if self.process.is_alive():
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.process.join(10)
        self.kill()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
            self.process.join(10)
        self.conn.close()


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
                 on_start: Callable[[Case], None] | None = None,
                 on_record: Callable[[dict], None] | None = None,
                 on_worker: Callable[[str, dict], None] | None = None):
        self.run_dir = run_dir
        self.settings = settings
        self.threads = threads
        self.on_start = on_start or (lambda case: None)
        self.on_record = on_record or (lambda record: None)
        self.on_worker = on_worker or (lambda family, info: None)
        self.worker: Worker | None = None

    def _worker_for(self, family: str) -> Worker:
        if self.worker and (self.worker.family != family or not self.worker.alive()):
            self.worker.stop()
            self.worker = None
        if self.worker is None:
            log = self.run_dir.logs / f"worker-{family}.log"
            self.worker = Worker(family, self.threads, str(log))
            self.on_worker(family, self.worker.info)
        return self.worker

    def run_one(self, case: Case) -> dict:
        adapter = registry.adapters()[case.impl]
        started, t0 = now_iso(), time.perf_counter()
        reasons = adapter.static_reasons(case)
        if reasons:  # known without a worker: missing package, device, dtype...
            result = {"status": "unsupported", "reason": "; ".join(reasons)}
        else:
            try:
                result = self._worker_for(adapter.framework).run(case, self.settings)
            except WorkerGone as gone:
                self.worker = None
                result = {"status": gone.status, "reason": gone.reason}
        flops = case_flops(case)
        return make_record(case, result, flops=flops, tflops=tflops(flops, result.get("median_s")),
                           threads=self.threads, worker=adapter.framework,
                           started_at=started, wall_s=round(time.perf_counter() - t0, 4))

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
        return records
