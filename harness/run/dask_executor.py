"""The `dask` executor: one run's cases spread over a Dask distributed cluster, their records
streamed back to the one run directory by the client (the process running `attnbench run`).

Each Dask worker holds a Measurer (harness.run.executor), the same one a local run uses, so a
case runs in a worker process of its family and a crash, hang or out-of-memory costs one case,
never the Dask worker. A Measurer takes one case at a time, whatever the worker's thread count.
Cases on a CUDA device ask for the resource `GPU: 1`; each GPU's worker advertises one, so two
timed cases never share a GPU. A case whose Dask worker dies is run again on another worker as
often as the scheduler's `allowed-failures` says (1 on the clusters started here), then
recorded as `error` with the reason.

Dask is imported only when this executor is used: the local executor needs none.
"""
from __future__ import annotations

import itertools
import multiprocessing
import os
import re
import socket
import threading
import time
import uuid
from collections import deque

from harness import values
from harness.run.executor import ExecutorError, Measurer, RunConfig, precise_now
from harness.spec import Case
from harness.store.env import gpus

CONNECT_TIMEOUT_S = 10.0
WORKERS_START_TIMEOUT_S = 120.0
CLOSE_TIMEOUT_S = 30.0
ADDRESS = re.compile(r"tcp://(?P<host>[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>\d{1,5})")
SCHEDULER = values.Kind(
    "a Dask scheduler address tcp://HOST:PORT (e.g. tcp://127.0.0.1:8786)",
    lambda v: isinstance(v, str) and (m := ADDRESS.fullmatch(v)) is not None
    and 0 < int(m["port"]) < 65536)
DAEMON_HINT = ("this Dask worker is a daemonic process, which cannot start the case's worker "
               "processes: start workers with DASK_DISTRIBUTED__WORKER__DAEMON=False")
# For the clusters started here, set process-wide: the nanny reads them again whenever it
# restarts a worker that died.
CLUSTER_CONFIG = {
    "distributed.worker.daemon": False,  # a Dask worker starts the case's worker processes
    "distributed.scheduler.allowed-failures": 1,  # a case whose worker died: once more, then error
    "distributed.scheduler.http.routes": [],  # no dashboard, no info pages
    "distributed.worker.http.routes": [],
}


def require_dask():
    try:
        import distributed
    except ImportError:
        raise ExecutorError("--executor dask: Dask is not installed: pip install "
                            "'attnbench[dask]'") from None
    return distributed


def visible_gpus() -> list[str]:
    """This machine's GPU ids, one per local worker (CUDA_VISIBLE_DEVICES's if it is set)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip()]
    return [str(i) for i in range(len(gpus()))]


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """ExecutorError unless something accepts a connection at `address` within the timeout."""
    match = ADDRESS.fullmatch(address)
    try:
        socket.create_connection((match["host"].strip("[]"), int(match["port"])),
                                 timeout=timeout_s).close()
    except OSError as exc:
        raise ExecutorError(f"--scheduler: nothing answers at {address} within {timeout_s:g} s "
                            f"({exc.strerror or exc}): expected a running Dask scheduler "
                            "(dask scheduler --host HOST --port PORT)") from None


def local_cluster(n_workers: int, gpu_ids: list[str], threads_per_worker: int = 1):
    """A LocalCluster of `n_workers` worker processes, scheduler and workers bound to
    127.0.0.1, no dashboard. Worker i < len(gpu_ids) sees only GPU gpu_ids[i]
    (CUDA_VISIBLE_DEVICES) and advertises the resource GPU=1; the rest run CPU cases only."""
    import dask
    from distributed import LocalCluster

    dask.config.set({**CLUSTER_CONFIG,
                     # not OMP_NUM_THREADS=1 and friends in this process (the nanny's own)
                     "distributed.nanny.pre-spawn-environ": {
                         "PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED", "random")}})
    cluster = LocalCluster(n_workers=0, threads_per_worker=threads_per_worker, processes=True,
                           host="127.0.0.1", dashboard_address=None, memory_limit=0,
                           scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})
    template = cluster.new_spec
    for i in range(n_workers):
        options = dict(template["options"])
        if i < len(gpu_ids):
            options.update(env={"CUDA_VISIBLE_DEVICES": gpu_ids[i]}, resources={"GPU": 1})
        cluster.worker_spec[i] = {"cls": template["cls"], "options": options}
    cluster.scale(n_workers)
    return cluster


# ---- the worker side: one Measurer per run in each Dask worker process ---------------------

_MEASURERS: dict[str, tuple[Measurer, str]] = {}  # run token -> (measurer, this worker's name)
_MEASURERS_LOCK = threading.Lock()


def _measurer(token: str, config: dict) -> tuple[Measurer, str]:
    from distributed import get_worker

    with _MEASURERS_LOCK:
        if token not in _MEASURERS:
            if multiprocessing.current_process().daemon:
                raise RuntimeError(DAEMON_HINT)
            for other in list(_MEASURERS):  # a worker serves one run at a time
                _MEASURERS.pop(other)[0].close()
            name = str(get_worker().name)
            suffix = "-" + re.sub(r"[^A-Za-z0-9._-]", "_", name)
            _MEASURERS[token] = (Measurer(RunConfig.from_dict(config), suffix), name)
        return _MEASURERS[token]


def _placed(token: str, config: dict, measure) -> dict:
    measurer, name = _measurer(token, config)
    out = measure(measurer)
    out.update(slot=name, slot_info={"pid": os.getpid(),
                                     "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES")})
    return out


def measure_on_worker(token: str, config: dict, case: dict) -> dict:
    """A Dask task: one measurement of one case, by this worker's Measurer."""
    return _placed(token, config, lambda m: m.measure(Case.from_dict(case)))


def peaks_on_worker(token: str, config: dict, targets: list) -> dict:
    return _placed(token, config, lambda m: m.peaks([tuple(t) for t in targets]))


def stop_measurer(token: str) -> None:
    if token in _MEASURERS:
        _MEASURERS[token][0].stop()


def abort_measurer(token: str) -> None:
    if token in _MEASURERS:
        _MEASURERS[token][0].abort()


def close_measurer(token: str) -> None:
    with _MEASURERS_LOCK:
        entry = _MEASURERS.pop(token, None)
    if entry:
        entry[0].close()


# ---- the client side ------------------------------------------------------------------------

class DaskExecutor:
    """Submits each measurement as a Dask task and yields them as they complete."""

    name = "dask"

    def __init__(self, client, cluster=None, owns_client: bool = True):
        self.client, self.cluster = client, cluster  # the cluster only when started here
        self.owns_client = owns_client
        self.token = uuid.uuid4().hex[:12]
        self.config: dict | None = None
        self.pending: set = set()
        self.counter = itertools.count()

    @classmethod
    def from_options(cls, workers: int | None = None, scheduler: str | None = None,
                     timeout_s: float = CONNECT_TIMEOUT_S) -> "DaskExecutor":
        """A LocalCluster of `workers` on this machine, or the running cluster at `scheduler`."""
        distributed = require_dask()
        if not (workers or scheduler):
            raise ExecutorError("--executor dask: expected --workers N (a cluster on this "
                                "machine) or --scheduler tcp://HOST:PORT (a running one)")
        if scheduler:
            check_reachable(scheduler, timeout_s)
            try:
                client = distributed.Client(scheduler, timeout=timeout_s, set_as_default=False)
            except (OSError, TimeoutError) as exc:
                raise ExecutorError(f"--scheduler: {scheduler} answers but is not a Dask "
                                    f"scheduler ({type(exc).__name__}: {exc})"[:300]) from None
            return cls(client)
        cluster = local_cluster(workers, visible_gpus())
        client = distributed.Client(cluster, set_as_default=False)
        client.wait_for_workers(workers, timeout=WORKERS_START_TIMEOUT_S)
        return cls(client, cluster)

    def workers(self) -> dict[str, dict]:
        try:
            return self.client.scheduler_info(n_workers=-1)["workers"]  # all, not the first 5
        except TypeError:  # distributed before 2025: always all of them
            return self.client.scheduler_info()["workers"]

    def describe(self) -> dict:
        return {"name": self.name, "scheduler": self.client.scheduler_info()["address"],
                "local_cluster": self.cluster is not None,
                "workers": {str(w.get("name")): {"host": w.get("host"),
                                                 "resources": w.get("resources") or {},
                                                 "nthreads": w.get("nthreads")}
                            for w in self.workers().values()}}

    def start(self, config: RunConfig, on_worker=None) -> None:
        self.config = config.to_dict()  # workers are reported with their measurements

    def prepare(self, cases) -> None:
        """Nothing ahead: each Dask worker starts its family workers as its cases arrive."""

    def peaks(self, targets):
        """One peaks measurement per host, on a worker with a GPU when the targets need one."""
        chosen: dict[str, tuple[str, bool]] = {}
        for address, info in sorted(self.workers().items()):
            has_gpu = bool((info.get("resources") or {}).get("GPU"))
            if info["host"] not in chosen or (has_gpu and not chosen[info["host"]][1]):
                chosen[info["host"]] = (address, has_gpu)
        futures = []
        for address, has_gpu in chosen.values():
            mine = [t for t in targets if has_gpu or not t[0].startswith("cuda")]
            if mine:
                futures.append(self.client.submit(peaks_on_worker, self.token, self.config,
                                                  mine, workers=[address], pure=False,
                                                  key=f"peaks-{address}@{self.token}"))
        out = []
        for future in futures:
            try:
                out.append(future.result())
            except Exception:  # that host's figures get no percent of peak
                continue
        return out

    def _lost(self, exc: BaseException, submitted: str, t0: float) -> dict:
        from distributed import KilledWorker

        if isinstance(exc, KilledWorker):
            last = getattr(exc.last_worker, "address", exc.last_worker)
            reason = (f"the Dask worker running it died, {exc.allowed_failures + 1} times (the "
                      f"last: {last}): the worker process itself was killed (the system's "
                      "out-of-memory killer? a lost host?), not only the case's")
        else:
            reason = f"the Dask task failed: {type(exc).__name__}: {exc}"
        return {"result": {"status": "error", "reason": reason[:500]}, "started_at": submitted,
                "wall_s": time.perf_counter() - t0, "host": None}

    def measure(self, cases, on_start):
        """Cases go out in their order, no more at a time than the cluster has threads, so each
        worker takes the next case as it frees up (a worker process serves a run of cases of
        its family) and cases queue here, not on the workers."""
        from distributed import as_completed

        workers = self.workers()
        with_gpu = any((w.get("resources") or {}).get("GPU") for w in workers.values())
        window = max(1, sum(w.get("nthreads") or 1 for w in workers.values()))
        for case in [c for c in cases if c.device.startswith("cuda")] if not with_gpu else []:
            on_start(case)
            yield case, {"result": {"status": "unsupported", "reason": (
                "no worker of this Dask cluster has a GPU: start one worker per GPU with "
                "--resources GPU=1")}, "started_at": precise_now(), "wall_s": 0.0, "host": None}
        queue = deque(c for c in cases if with_gpu or not c.device.startswith("cuda"))
        sent: dict = {}
        done = as_completed([], loop=self.client.loop)

        def send() -> None:
            case = queue.popleft()
            future = self.client.submit(
                measure_on_worker, self.token, self.config, case.to_dict(), pure=False,
                key=f"{case.case_id}@{self.token}-{next(self.counter)}",
                resources={"GPU": 1} if case.device.startswith("cuda") else None)
            sent[future] = (case, precise_now(), time.perf_counter())
            self.pending.add(future)
            done.add(future)

        for _ in range(min(window, len(queue))):
            send()
        for future in done:
            self.pending.discard(future)
            if queue:  # the freed worker's next case, before this one's record is written
                send()
            case, submitted, t0 = sent.pop(future)
            try:
                measured = future.result()
            except Exception as exc:  # the worker died (twice), or the task itself failed
                measured = self._lost(exc, submitted, t0)
            on_start(case)
            yield case, measured

    def _on_workers(self, function) -> None:
        try:
            self.client.run(function, self.token, on_error="ignore")
        except Exception:  # a worker gone or restarting has nothing left to end
            pass

    def end_pass(self) -> None:
        self._on_workers(stop_measurer)

    def close(self, abandon: bool = False) -> None:
        """Cancel what is outstanding (after Ctrl-C), end the workers' processes of this run,
        and shut the cluster down if it was started here."""
        try:
            if abandon:
                if self.pending:
                    self.client.cancel(list(self.pending), force=True)
                self._on_workers(abort_measurer)
            self._on_workers(close_measurer)
        finally:
            self.pending = set()
            for thing in (self.client if self.owns_client else None, self.cluster):
                try:
                    if thing is not None:
                        thing.close(timeout=CLOSE_TIMEOUT_S)
                except Exception:  # closing what is already gone
                    pass
