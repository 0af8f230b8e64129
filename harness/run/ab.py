"""Interleaved A/B: the same cases in two environments, side by side, in one job.

A comparison with a run stored weeks ago on another machine mixes the change with everything
else that moved. Here base and head are two Python interpreters (two virtualenvs: two torch
versions, two versions of a kernel package, or the same interpreter with different environment
variables), each with its own worker process (harness.run.ab_worker) for the case's framework
family. Only one of them works at a time. Each side takes a run's phases
(harness.run.execute.CaseRun: truth, prepare, the checked call under `--mem-limit`, samples,
passes), one request at a time. For each case both prepare and warm up, then they take turns:
`BLOCK` samples from one, `BLOCK` from the other, the order swapped every round (ABBA), until
the run's stop rule (harness.measure.timer.enough) holds for both, each side's budget counting
that side's blocks; never fewer than `MIN_SAMPLES` per side. Both sides use the same number of
calls per sample. Machine drift lands on both sides alike. A side's block starts only once the
other side's process has stopped using the CPU (`wait_until_quiet`): OpenBLAS and OpenMP threads
spin for a while after their last task, and would otherwise share the cores with the block.

The cases the first pass flags (regression, improvement, new failure, memory growth) are measured
once more, after all others, and that measurement decides: a transient disturbance has to strike
twice to fail the gate. Output: OUT/base/ and OUT/head/ (run directories, as `attnbench run`
writes them; the superseded first measurements in first_pass.jsonl), OUT/compare.md and
OUT/compare.json.
"""
from __future__ import annotations

import dataclasses
import json
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from harness import registry
from harness.analysis import compare
from harness.constants import TIMED_STATUSES
from harness.measure.contention import process_cpu_ns
from harness.measure.timer import Samples, calls_per_sample, enough
from harness.run.ab_worker import PROTOCOL
from harness.run.executor import OomHistory, precise_now
from harness.run.process import WorkerGone, worker_env
from harness.run.record import case_record
from harness.run.runner import order_cases
from harness.run.worker import WORKER_START_TIMEOUT_S, WorkerHandle
from harness.spec import Case, TimingSettings
from harness.store import RunDir
from harness.store.rundir import record_line

ROOT = Path(__file__).resolve().parents[2]
WORKER_MODULE = "harness.run.ab_worker"
BLOCK = 5
# Per side (20 is the least at which a one-sided rank test can reach p < 0.001). On a 2-core VM
# +20% on the smoke shapes (20-100 µs) was caught in 3 of 4 cases with 20 samples, 4 of 4 with
# 50: the smallest detectable slowdown there fell from a median 1.28x to 1.09x
MIN_SAMPLES = 50
# Per side and case: sampling goes on past MIN_SAMPLES until both medians reach the suite's
# target interval (`target_ci`), this budget or `max_samples` ends it
MIN_BUDGET_S = 3.0
# A process is quiet once its threads use less than QUIET_SHARE of a core over QUIET_POLL_S
# (NumPy's OpenBLAS threads spin about 0.1 s after their last task; the kernel adds a running
# thread's time at its scheduler ticks, so the window spans several); never waited beyond
# QUIET_MAX_S, for a process that keeps a thread busy
QUIET_SHARE, QUIET_POLL_S, QUIET_MAX_S = 0.05, 0.02, 0.3


class ABError(ValueError):
    """A side that cannot run (bad interpreter, missing harness); str() is one line."""


@dataclasses.dataclass
class SideSpec:
    name: str  # "base" or "head"
    python: str
    env: dict[str, str]
    root: Path = ROOT  # the attnbench checkout whose harness and impls the side imports

    def environ(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        path = os.pathsep.join(filter(None, [str(self.root), os.environ.get("PYTHONPATH")]))
        return {**os.environ, **(extra or {}), **self.env, "PYTHONPATH": path}


def side_env(spec: SideSpec, threads: int, suite_name: str) -> dict:
    """env.json for one side, captured by that side's interpreter (its own package versions)."""
    try:
        done = subprocess.run([spec.python, "-m", WORKER_MODULE, "--env", str(threads),
                               suite_name, *sys.argv], cwd=spec.root, env=spec.environ(),
                              capture_output=True, text=True, timeout=WORKER_START_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ABError(f"--{spec.name}-python {spec.python}: cannot run it: {exc}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ABError(f"--{spec.name}-python {spec.python}: cannot import attnbench from "
                      f"{spec.root}: {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


class SideWorker(WorkerHandle):
    """A running harness.run.ab_worker for one side and one framework family: JSON lines over
    its stdin and stdout."""

    STOP = {"kind": "stop"}

    def __init__(self, spec: SideSpec, family: str, threads: int, log_path: Path,
                 capped: bool = False):
        self.spec, self.family = spec, family
        with open(log_path, "a") as log:  # what the interpreter says before the worker starts
            self.process = subprocess.Popen(
                [spec.python, "-m", WORKER_MODULE, family, str(threads), str(log_path)],
                cwd=spec.root, env=spec.environ(worker_env(family, threads, capped)),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
        self._buffer = b""
        self.info = None
        self.ready()
        if self.info.get("protocol") != PROTOCOL:
            self.kill()
            raise ABError(f"{spec.name} side: the attnbench in {spec.root} speaks A/B protocol "
                          f"{self.info.get('protocol')}, this one {PROTOCOL}")

    def _send(self, message) -> None:
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        self.process.stdin.flush()

    def _read(self, timeout_s: float):
        deadline = time.monotonic() + timeout_s
        fd = self.process.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    return None
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise EOFError("the worker closed its end of the pipe")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def _join(self, timeout_s: float) -> int | None:
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def _close_pipes(self) -> None:
        for pipe in (self.process.stdin, self.process.stdout):
            try:
                pipe.close()
            except OSError:
                pass


def wait_until_quiet(pid: int) -> float:
    """Wait until process `pid` (the side whose block just ended) stops using the CPU, so the
    other side's block does not share the cores with its spinning threads; the seconds waited."""
    start = time.perf_counter()
    last = process_cpu_ns(pid)
    while last is not None and time.perf_counter() - start < QUIET_MAX_S:
        time.sleep(QUIET_POLL_S)
        now = process_cpu_ns(pid)
        if now is None or now - last < QUIET_SHARE * QUIET_POLL_S * 1e9:
            break
        last = now
    return time.perf_counter() - start


def ab_settings(timing: TimingSettings) -> TimingSettings:
    """The suite's timing with at least MIN_SAMPLES per side (with fewer, a one-sided rank test
    cannot reach p < 0.001 however large the difference) and a budget of at least
    MIN_BUDGET_S per side: a suite's budget is sized for a run's one figure, and spent, it ends
    the sampling before the medians reach their target interval, which is what lets the
    ratio's interval clear the threshold."""
    least = max(timing.min_samples, MIN_SAMPLES)
    return dataclasses.replace(timing, min_samples=least, max_samples=max(timing.max_samples, least),
                               budget_s=max(timing.budget_s, MIN_BUDGET_S))


class ABRunner:
    """Runs cases on both sides, interleaved, and keeps the two runs' records."""

    def __init__(self, base: SideSpec, head: SideSpec, out: Path, settings: TimingSettings,
                 threads: int, on_record: Callable[[Case, dict, dict], None] | None = None,
                 mem_limit: int | None = None):
        self.specs = {"base": base, "head": head}
        self.out = Path(out)
        self.settings = settings
        self.threads = threads
        self.mem_limit = mem_limit  # `--mem-limit`, as in a run (harness.run.execute.CaseRun)
        self.ooms = {name: OomHistory() for name in self.specs}
        self.on_record = on_record or (lambda case, base, head: None)
        self.dirs = {name: RunDir(self.out / name) for name in self.specs}
        self.workers: dict[str, SideWorker] = {}
        self.infos: dict[str, dict] = {"base": {}, "head": {}}
        self.peaks: dict[str, dict] = {"base": {}, "head": {}}

    # -- workers --
    def _worker(self, name: str, family: str) -> SideWorker:
        worker = self.workers.get(name)
        if worker and (worker.family != family or not worker.alive()):
            worker.stop()
            worker = None
        if worker is None:
            logs = self.dirs[name].logs
            logs.mkdir(parents=True, exist_ok=True)
            worker = SideWorker(self.specs[name], family, self.threads,
                                logs / f"worker-{family}.log", self.mem_limit is not None)
            self.workers[name] = worker
            self.infos[name][family] = worker.info
        return worker

    def _ask(self, name: str, family: str, message: dict, doing: str) -> dict:
        """A request to one side; a dead or hung worker becomes that side's status."""
        try:
            return self._worker(name, family).ask(message, self.settings.timeout_s, doing)
        except WorkerGone as gone:
            self.workers.pop(name, None)
            return {"status": gone.status, "reason": gone.reason}

    def _prepare(self, name: str, family: str, case: Case) -> dict:
        """One side's case up to its samples, or its result if it ends before them."""
        predicted = self.ooms[name].predicted(case)
        if predicted:
            return predicted
        return self._ask(name, family, {"kind": "prepare", "case": case.to_dict(),
                                        "settings": dataclasses.asdict(self.settings),
                                        "mem_limit": self.mem_limit}, "preparing the case")

    def _quiet(self, name: str) -> None:
        """Before the other side works: this side's threads have stopped spinning."""
        worker = self.workers.get(name)
        if worker is not None:
            wait_until_quiet(worker.process.pid)

    def _discard(self, name: str) -> None:
        worker = self.workers.pop(name, None)
        if worker is not None:
            worker.kill()

    def close(self, kill: bool = False) -> None:
        for worker in self.workers.values():
            worker.kill() if kill else worker.stop()
        self.workers = {}

    # -- one case, both sides --
    def measure(self, case: Case) -> dict[str, dict]:
        """Both sides' results for one case (status, check, timing, kernel, memory)."""
        family = registry.adapters()[case.impl].framework
        results = {}
        for name in self.specs:
            results[name] = self._prepare(name, family, case)
            self._quiet(name)
        timing = [n for n in self.specs if results[n]["status"] in TIMED_STATUSES]
        samples: dict[str, list[float]] = {n: [] for n in timing}
        spent = dict.fromkeys(timing, 0.0)  # each side's seconds in its blocks (the budget's)
        cps = 1
        if timing:
            fastest = min(results[n]["per_call_s"] for n in timing)
            cps = calls_per_sample(fastest, self.settings.min_sample_s)  # both sides alike
        order = list(timing)
        while timing:
            for name in order:
                if name not in timing:
                    continue
                got = self._ask(name, family, {"kind": "samples", "n": BLOCK,
                                               "calls_per_sample": cps}, "sampling")
                if "samples_s" not in got:  # it failed while being timed
                    results[name] = got
                    timing.remove(name)
                    samples.pop(name)
                    spent.pop(name)
                    continue
                samples[name].extend(got["samples_s"])
                spent[name] += got["spent_s"]
                self._quiet(name)
            order.reverse()
            if all(enough(samples[n], spent[n], self.settings) for n in timing):
                break
        for name, values in samples.items():
            result = results[name]
            result.pop("per_call_s", None)
            warm_s = result.pop("timed_s", None) or 0.0  # the side's warm-up, as it reported it
            taken = Samples(tuple(values), cps, result.get("warmup_calls") or 0,
                            warm_s + sum(values) * cps, self.settings.target_ci,
                            timer=result.get("timer"))
            result.update(taken.to_record())
            result.update(self._ask(name, family, {"kind": "finish"}, "measuring memory"))
        for name, result in results.items():
            result.pop("per_call_s", None)
            if self.ooms[name].note(case, result):  # the side's worker starts afresh
                self._discard(name)
        return results

    def record(self, case: Case, result: dict, started: str, wall_s: float, side: str) -> dict:
        return case_record(case, result, threads=self.threads,
                           worker=registry.adapters()[case.impl].framework, started_at=started,
                           wall_s=wall_s, peaks=self.peaks.get(side))

    def measure_peaks(self, cases: list[Case]) -> dict[str, dict]:
        """Each side's matmul and bandwidth peaks (its own torch), for percent of peak."""
        targets = sorted({(c.device, c.dtype) for c in cases})
        for name in self.specs:
            answer = self._ask(name, "torch", {"kind": "peaks", "targets": targets},
                               "measuring peaks")
            self.peaks[name] = {} if "status" in answer else answer
        return self.peaks

    def run(self, cases: list[Case]) -> dict[str, list[dict]]:
        """Every case on both sides; records appended to both run directories as they exist."""
        records: dict[str, list[dict]] = {"base": [], "head": []}
        for run_dir in self.dirs.values():
            run_dir.open_for_append()
        try:
            for case in order_cases(cases):
                started, t0 = precise_now(), time.perf_counter()
                results = self.measure(case)
                wall = time.perf_counter() - t0
                pair = {}
                for name, result in results.items():
                    pair[name] = self.record(case, result, started, wall, name)
                    self.dirs[name].append(pair[name])
                    records[name].append(pair[name])
                self.on_record(case, pair["base"], pair["head"])
        except BaseException:
            self.close(kill=True)
            raise
        finally:
            for run_dir in self.dirs.values():
                run_dir.close()
        self.close()
        return records


def flagged(result: dict) -> set[str]:
    """Cases whose first verdict would change the gate's answer or the reader's mind."""
    return {r["case_id"] for r in result["cases"]
            if r["failing"] or r["verdict"] in ("improvement", "regression", "new_failure")}


def run_ab(runner: ABRunner, cases: list[Case], threshold: float, mem_threshold: float,
           note: Callable[[str], None] = print) -> dict:
    """First pass, re-measure what it flags, write both runs and the comparison."""
    first = runner.run(cases)
    peaks = (runner.peaks.get("base"), runner.peaks.get("head"))
    result = compare.compare_records(first["base"], first["head"], threshold, mem_threshold,
                                     interleaved=True, peaks=peaks)
    first_verdicts = {r["case_id"]: r["verdict"] for r in result["cases"]}
    again_ids = flagged(result)
    if again_ids:
        note(f"re-measuring {len(again_ids)} flagged case(s) before the verdict is final")
        redo = [c for c in cases if c.case_id in again_ids]
        second = runner.run(redo)
        for name in ("base", "head"):
            (runner.dirs[name].path / "first_pass.jsonl").write_text("".join(
                record_line(r) for r in first[name] if r["case_id"] in again_ids))
        final = {}
        for name in ("base", "head"):
            newer = {r["case_id"]: r for r in second[name]}
            final[name] = [newer.get(r["case_id"], r) for r in first[name]]
            runner.dirs[name].rewrite(final[name])
        result = compare.compare_records(final["base"], final["head"], threshold, mem_threshold,
                                         interleaved=True, peaks=peaks)
    for row in result["cases"]:
        if row["case_id"] in again_ids:
            row["first_pass_verdict"] = first_verdicts[row["case_id"]]
            row["remeasured"] = True
    result["remeasured"] = sorted(again_ids)
    return result
