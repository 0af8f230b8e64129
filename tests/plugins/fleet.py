"""Adapters for the Dask executor's tests, loaded through $ATTNBENCH_PLUGINS.

`fleet.fake_gpu` is NumPy's attention claiming the CUDA device: its cases ask the cluster for a
GPU, so placement can be tested on a machine without one. `fleet.kills_its_worker` kills the
Dask worker process running it (the parent of the case's worker process), so the executor's
handling of a lost worker can be tested; it refuses to run anywhere but under a Dask worker.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import time

from impls.base import Prepared
from impls.numpy_ref import NumpyAttention


class FakeGpu(NumpyAttention):
    name = "fleet.fake_gpu"
    devices = ("cuda",)
    description = "test adapter: NumPy on the CPU, pretending to be a CUDA kernel"


def _kill_the_dask_worker():
    parent = multiprocessing.parent_process()
    if parent is None or "Dask" not in parent.name:
        raise RuntimeError("fleet.kills_its_worker runs only under a Dask worker")
    os.kill(parent.pid, signal.SIGKILL)
    time.sleep(60)


class KillsItsWorker(NumpyAttention):
    name = "fleet.kills_its_worker"
    description = "test adapter: kills the Dask worker that runs it"

    def prepare(self, case, inputs):
        prepared = super().prepare(case, inputs)
        return Prepared(call=_kill_the_dask_worker, to_numpy=prepared.to_numpy,
                        out_dtype=prepared.out_dtype)


ADAPTERS = [FakeGpu(), KillsItsWorker()]
