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
from harness.peaks import pct_of_peak
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

    def ask(self, message: dict, timeout_s: float, doing: str):
        try:
            self.conn.send(message)
        except (BrokenPipeError, OSError):
            self.process.join(5)
            raise WorkerGone(*_describe_exit(self.process.exitcode)) from None
        return self._receive(timeout_s, doing)

    def run(self, case: Case, settings: TimingSettings, mem_limit: int | None = None) -> dict:
        message = {"kind": "run", "case": case.to_dict(), "settings": dataclasses.asdict(settings),
                   "mem_limit": mem_limit}
        return self.ask(message, settings.timeout_s, "running the case")

    def probe(self, case: Case, timeout_s: float = 120.0) -> list[str]:
        """The library's reasons why it cannot run `case` (empty: it can)."""
        return self.ask({"kind": "probe", "case": case.to_dict()}, timeout_s, "asking the library")

    def peaks(self, targets: list[tuple[str, str]], timeout_s: float = 600.0) -> dict:
        return self.ask({"kind": "peaks", "targets": targets}, timeout_s, "measuring peaks")

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


def config_key(case: Case) -> tuple:
    """Everything but seq_len: the sweep along which an out-of-memory predicts the next one."""
    return (case.impl, case.level, case.mode, case.device, case.dtype, case.batch, case.heads,
            case.head_dim, case.causal, case.seed, case.padding, case.norm, case.ffn_mult,
            case.seq_len_kv == case.seq_len)


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

    def _worker_for(self, family: str) -> Worker:
        if self.worker and (self.worker.family != family or not self.worker.alive()):
            self.worker.stop()
            self.worker = None
        if self.worker is None:
            log = self.run_dir.logs / f"worker-{family}.log"
            self.run_dir.logs.mkdir(parents=True, exist_ok=True)
            self.worker = Worker(family, self.threads, str(log))
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
        flops = case_flops(case)
        record = make_record(case, result, flops=flops, tflops=tflops(flops, result.get("median_s")),
                             threads=self.threads, worker=adapter.framework,
                             started_at=started, wall_s=round(time.perf_counter() - t0, 4))
        record["pct_of_peak"] = pct_of_peak(record, self.peaks)
        return record

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
