"""The worker process: imports one framework family, runs cases sent over a pipe, sends results.

Each family (numpy, torch, tensorflow) gets its own process, so TensorFlow never shares one
with PyTorch and a crash or hang costs one case. Output of the libraries goes to a log file in
the run directory, not to the user's terminal.
"""
from __future__ import annotations

import os
import signal
import sys

THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                   "TF_NUM_INTRAOP_THREADS")


def worker_env(family: str, threads: int) -> dict[str, str]:
    """Environment a worker must start with (thread pools are sized at import time)."""
    env = {var: str(threads) for var in THREAD_ENV_VARS}
    if family == "tensorflow":
        env.update(KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    return env


def set_threads(family: str, threads: int) -> dict:
    """Give every framework the same intra-op thread count; return what it reports back."""
    info = {"family": family, "pid": os.getpid(), "python": sys.version.split()[0]}
    if family == "torch":
        import torch

        torch.set_num_threads(threads)
        info.update(torch=torch.__version__, threads=torch.get_num_threads(),
                    cuda=torch.version.cuda, cuda_available=torch.cuda.is_available())
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    elif family == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        info.update(tensorflow=tf.__version__,
                    threads=tf.config.threading.get_intra_op_parallelism_threads())
    else:
        import numpy as np

        info.update(numpy=np.__version__, threads=threads)
    return info


def _probe(adapter, case) -> list[str]:
    try:
        return adapter.unsupported(case)
    except Exception as exc:  # a probe that fails says so instead of ending the worker
        return [f"asking the library failed: {type(exc).__name__}: {exc}"]


def _die_with_parent() -> None:
    """Ask Linux to kill this worker when the runner dies, even mid-case in a hung C call:
    a killed or timed-out runner must not leave a worker burning the cores."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the worker still exits when its pipe closes between cases
    if os.getppid() == 1:  # the runner died before the request took effect
        os._exit(1)


def worker_main(conn, family: str, threads: int, log_path: str | None) -> None:
    """Loop: receive a message (kind "run", "probe" or "peaks"); send back its answer."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner decides what Ctrl-C means
    _die_with_parent()
    if log_path:
        log = open(log_path, "a", buffering=1)
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        sys.stdout = sys.stderr = log
    conn.send({"ready": True, "info": set_threads(family, threads)})
    while True:
        message = conn.recv()
        if message is None:
            break
        conn.send(_handle(message))
    conn.close()


def _handle(message: dict):
    from harness import registry
    from harness.execute import execute
    from harness.spec import Case
    from harness.timing import TimingSettings

    if message["kind"] == "peaks":
        from harness.peaks import measure_peaks

        return measure_peaks([tuple(t) for t in message["targets"]])
    case = Case.from_dict(message["case"])
    adapter = registry.get(case.impl)
    print(f"--- {message['kind']} {case.case_id}", flush=True)
    if message["kind"] == "probe":  # only ask whether the library can run it
        return _probe(adapter, case)
    return execute(case, adapter, TimingSettings(**message["settings"]), message.get("mem_limit"))
