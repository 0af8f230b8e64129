"""The run worker, both ends of its pipe: `worker_main` runs in a spawned process of one framework
family and answers requests (run a case, probe the library, measure the machine's peaks);
`Worker` is the runner's handle on it, which turns a death or a hang into WorkerGone, as every
`WorkerHandle` does (an A/B side's too).
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import os
from contextlib import contextmanager, suppress

from harness.run.process import (WorkerGone, describe_exit, family_library, redirect_output,
                                  settle, start_worker, worker_env)
from harness.spec import Case, TimingSettings

WORKER_START_TIMEOUT_S = 180.0


def worker_main(conn, family: str, threads: int, log_path: str | None,
                cache_dir: str | None = None) -> None:
    """Loop: receive a message (kind "run", "probe" or "peaks"); send back its answer."""
    if log_path:
        redirect_output(log_path)
    info = start_worker(family, threads)
    from harness.problem.truth import use_cache_dir

    use_cache_dir(cache_dir)
    conn.send({"ready": True, "info": info})
    while True:
        message = conn.recv()
        if message is None:
            break
        conn.send(_handle(message))
    conn.close()


def _probe(adapter, case) -> list[str]:
    try:
        return adapter.unsupported(case)
    except Exception as exc:  # a probe that fails says so instead of ending the worker
        return [f"asking the library failed: {type(exc).__name__}: {exc}"]


def _handle(message: dict):
    from harness import registry
    from harness.run.execute import execute

    if message["kind"] == "peaks":
        from harness.measure.peaks import measure_peaks

        return measure_peaks([tuple(t) for t in message["targets"]])
    case = Case.from_dict(message["case"])
    adapter = registry.get(case.impl)
    print(f"--- {message['kind']} {case.case_id} (pid {os.getpid()})", flush=True)
    if message["kind"] == "probe":  # only ask whether the library can run it
        return _probe(adapter, case)
    settle()
    return execute(case, adapter, TimingSettings(**message["settings"]), message.get("mem_limit"))


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


class WorkerHandle:
    """What the process that started a worker holds, whichever worker it is: the run's
    (`Worker`: a multiprocessing child, Python objects over a Pipe) or an A/B side's
    (harness.run.ab.SideWorker: another interpreter, JSON lines over its stdin and stdout).
    `ask` sends a request and waits for the answer; a worker that dies or hangs instead raises
    WorkerGone with the case's status, read the same way for both. A subclass supplies the
    transport (`_send`, `_read`, `_close_pipes`), how to wait for its process (`_join`), and
    STOP, the message that asks the worker to exit."""

    STOP: object
    family: str
    process: object  # has kill(), whatever started it
    info: dict | None = None  # the worker's start-up info, once it is ready

    def _send(self, message) -> None:
        raise NotImplementedError

    def _read(self, timeout_s: float):
        """The next answer, or None if none came within `timeout_s`; EOFError or OSError if the
        pipe closed."""
        raise NotImplementedError

    def _join(self, timeout_s: float) -> int | None:
        """Wait up to `timeout_s` for the process to end: its exit code, None while it runs."""
        raise NotImplementedError

    def _close_pipes(self) -> None:
        raise NotImplementedError

    def ready(self) -> dict:
        """Wait until the worker has imported its library (its start-up info); WorkerGone if
        it died or hung instead."""
        if self.info is None:
            self.info = self._receive(WORKER_START_TIMEOUT_S, "starting")["info"]
        return self.info

    def ask(self, message, timeout_s: float, doing: str):
        """The worker's answer to `message`; WorkerGone if it dies, or says nothing within
        `timeout_s` (it is killed then: `doing` says what it was doing)."""
        try:
            self._send(message)
        except OSError:
            raise self._gone() from None
        return self._receive(timeout_s, doing)

    def _receive(self, timeout_s: float, doing: str):
        try:
            answer = self._read(timeout_s)
        except (EOFError, OSError):
            raise self._gone() from None
        if answer is None:
            if not self.alive():
                raise self._gone()
            self.kill()
            raise WorkerGone("timeout", f"no answer within {timeout_s:g} s while {doing}; "
                                        "worker killed")
        return answer

    def _gone(self) -> WorkerGone:
        """Why the worker stopped answering, from its exit code (harness.run.process)."""
        code = self._join(5)
        if code is None:
            self.kill()
            return WorkerGone("error", "worker closed its pipe without exiting; worker killed")
        return describe_exit(code)

    def alive(self) -> bool:
        return self._join(0) is None

    def stop(self) -> None:
        """Ask the worker to exit; kill it if it has not within 10 s."""
        if self.alive():
            with suppress(OSError, ValueError):  # it died meanwhile
                self._send(self.STOP)
            self._join(10)
        self.kill()

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
            self._join(10)
        self._close_pipes()


class PipeWorker(WorkerHandle):
    """A multiprocessing child spoken to over a Pipe (`conn`, `process`): the transport of the
    run's workers and of the profiling worker."""

    STOP = None  # the child's loop ends on it
    conn: object

    def _send(self, message) -> None:
        self.conn.send(message)

    def _read(self, timeout_s: float):
        return self.conn.recv() if self.conn.poll(timeout_s) else None

    def _join(self, timeout_s: float) -> int | None:
        self.process.join(timeout_s)
        return self.process.exitcode

    def _close_pipes(self) -> None:
        self.conn.close()


class Worker(PipeWorker):
    """One spawned process for one framework family (harness.run.process.FAMILIES), started
    with that family's environment (Keras' backend, JAX's settings) in place."""

    def __init__(self, family: str, threads: int, log_path: str | None,
                 cache_dir: str | None = None, wait: bool = True, capped: bool = False):
        """Spawn the process; with `wait`, also wait until it is ready (else: `ready()`).
        `capped`: its cases run under `--mem-limit` (harness.run.process.worker_env)."""
        family_library(family)  # an unknown family fails here, not in the child
        ctx = multiprocessing.get_context("spawn")
        self.family = family
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=worker_main,
                                   args=(child, family, threads, log_path, cache_dir),
                                   daemon=True, name=f"attnbench-{family}")
        with _environ(worker_env(family, threads, capped)):
            self.process.start()
        child.close()
        self.info = None
        if wait:
            self.ready()

    def run(self, case: Case, settings: TimingSettings, mem_limit: int | None = None) -> dict:
        message = {"kind": "run", "case": case.to_dict(), "settings": dataclasses.asdict(settings),
                   "mem_limit": mem_limit}
        return self.ask(message, settings.timeout_s, "running the case")

    def probe(self, case: Case, timeout_s: float = 120.0) -> list[str]:
        """The library's reasons why it cannot run `case` (empty: it can)."""
        return self.ask({"kind": "probe", "case": case.to_dict()}, timeout_s, "asking the library")

    def peaks(self, targets: list[tuple[str, str]], timeout_s: float = 600.0) -> dict:
        return self.ask({"kind": "peaks", "targets": targets}, timeout_s, "measuring peaks")
