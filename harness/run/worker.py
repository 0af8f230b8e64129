"""The run worker, both ends of its pipe: `worker_main` runs in a spawned process of one framework
family and answers requests (run a case, probe the library, measure the machine's peaks);
`Worker` is the runner's handle on it, which turns a death or a hang into WorkerGone.
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import os
from contextlib import contextmanager

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


class Worker:
    """One spawned process for one framework family (harness.run.process.FAMILIES), started
    with that family's environment (Keras' backend, JAX's settings) in place."""

    def __init__(self, family: str, threads: int, log_path: str | None,
                 cache_dir: str | None = None, wait: bool = True):
        """Spawn the process; with `wait`, also wait until it is ready (else: `ready()`)."""
        family_library(family)  # an unknown family fails here, not in the child
        ctx = multiprocessing.get_context("spawn")
        self.family = family
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=worker_main,
                                   args=(child, family, threads, log_path, cache_dir),
                                   daemon=True, name=f"attnbench-{family}")
        with _environ(worker_env(family, threads)):
            self.process.start()
        child.close()
        self.info: dict | None = None
        if wait:
            self.ready()

    def ready(self) -> dict:
        """Wait until the worker has imported its library (its start-up info); WorkerGone if
        it died or hung instead."""
        if self.info is None:
            self.info = self._receive(WORKER_START_TIMEOUT_S, "starting")["info"]
        return self.info

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
            raise describe_exit(self.process.exitcode) from None

    def ask(self, message: dict, timeout_s: float, doing: str):
        try:
            self.conn.send(message)
        except (BrokenPipeError, OSError):
            self.process.join(5)
            raise describe_exit(self.process.exitcode) from None
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
