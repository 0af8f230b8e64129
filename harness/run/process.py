"""What every worker process shares, whichever side started it (the run's or an A/B side's):
its environment, its start-up, and how its death is read by the process that started it.

Each family (FAMILIES) gets its own process, so TensorFlow, JAX and PyTorch never share one,
Keras' backend (fixed when keras is first imported) is the family's, and a crash or hang costs
one case.
"""
from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import signal
import sys

THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                   "TF_NUM_INTRAOP_THREADS")
# JAX: no preallocation of 75% of a GPU's memory at start; float64 cases really float64
_JAX_ENV = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", "JAX_ENABLE_X64": "true"}
# glibc's malloc with its thresholds fixed where its own dynamic rule settles in a long-running
# process: blocks of 32 MiB and more mapped afresh (and faulted in) on every call, as glibc always
# does; smaller ones reused, nothing returned to the system while a case runs (settle() returns
# it between cases). Left dynamic, a worker's history decides whether a case's temporaries are
# faulted in afresh on every call: measured here, torch.naive at N=1024 (16 MiB blocks) ran 12 ms
# in one worker and 30 ms (12,000 page faults a call) in another that had run a memory pass
# first. Under `--mem-limit` workers keep the dynamic rule: the cap (RLIMIT_DATA) counts the heap's
# growth, not its reuse, so memory kept for reuse would escape it (docs/method.md says so).
MALLOC_TUNABLES = {"glibc.malloc.mmap_threshold": str(32 << 20),
                   "glibc.malloc.trim_threshold": str(1 << 40)}
# family -> (the library whose thread pool it sizes, the environment it starts with)
FAMILIES = {
    "numpy": ("numpy", {}),
    "torch": ("torch", {}),
    "tensorflow": ("tensorflow", {"KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}),
    "jax": ("jax", dict(_JAX_ENV)),
    "keras-jax": ("jax", {"KERAS_BACKEND": "jax", **_JAX_ENV}),
    "keras-torch": ("torch", {"KERAS_BACKEND": "torch"}),
}


def family_library(family: str) -> str:
    if family not in FAMILIES:
        raise ValueError(f"unknown worker family {family!r}: expected one of {', '.join(FAMILIES)}")
    return FAMILIES[family][0]


class WorkerGone(Exception):
    """The worker died or stopped answering; the message says how."""

    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def describe_exit(code: int | None) -> WorkerGone:
    """What a worker's exit code means for the case it was running."""
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        if -code == signal.SIGKILL:
            return WorkerGone("oom", f"worker killed by {name} (most likely the system's "
                                     "out-of-memory killer)")
        return WorkerGone("error", f"worker crashed with signal {name}")
    return WorkerGone("error", f"worker exited unexpectedly with code {code}")


def worker_env(family: str, threads: int, capped: bool = False) -> dict[str, str]:
    """Environment a worker must start with (thread pools are sized at import time, malloc's
    thresholds at start); `capped`: its cases run under `--mem-limit`."""
    env = {var: str(threads) for var in THREAD_ENV_VARS}
    if family != "numpy":
        # The harness's own NumPy (float64 references, checks) must not compete with the timed
        # library: OpenBLAS threads otherwise spin ~0.1 s after each use, and beside a torch or
        # TensorFlow pool of as many threads as cores that preempts the timed threads (measured:
        # run-queue wait 0.5-1.0 and medians up to 14x). In NumPy's own worker its spinning is
        # part of what is timed, so it keeps OpenBLAS's default.
        env["OPENBLAS_THREAD_TIMEOUT"] = "4"
    tunables = malloc_tunables(os.environ.get("GLIBC_TUNABLES", ""),
                               {} if capped else MALLOC_TUNABLES)
    if tunables:
        env["GLIBC_TUNABLES"] = tunables
    family_library(family)
    env.update(FAMILIES[family][1])
    return env


def malloc_tunables(given: str, ours: dict[str, str] = MALLOC_TUNABLES) -> str:
    """$GLIBC_TUNABLES with `ours` added; a tunable the user set keeps its value."""
    parts = [part for part in given.split(":") if part]
    named = {part.split("=", 1)[0] for part in parts}
    parts += [f"{name}={value}" for name, value in ours.items() if name not in named]
    return ":".join(parts)


def pin_cpus(threads: int) -> int:
    """XLA sizes its CPU thread pool from the CPUs the process may run on and has no knob for
    it: with fewer threads than CPUs, the process is pinned to that many (before jax loads)."""
    allowed = sorted(os.sched_getaffinity(0))
    if 0 < threads < len(allowed):
        os.sched_setaffinity(0, allowed[:threads])
    return len(os.sched_getaffinity(0))


def set_threads(family: str, threads: int) -> dict:
    """Give every framework the same intra-op thread count; return what it reports back."""
    info = {"family": family, "pid": os.getpid(), "python": sys.version.split()[0]}
    library = family_library(family)
    if library == "torch":
        import torch

        torch.set_num_threads(threads)
        info.update(torch=torch.__version__, threads=torch.get_num_threads(),
                    cuda=torch.version.cuda, cuda_available=torch.cuda.is_available())
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    elif library == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        info.update(tensorflow=tf.__version__,
                    threads=tf.config.threading.get_intra_op_parallelism_threads())
    elif library == "jax":
        cpus = pin_cpus(threads)
        import jax

        info.update(jax=jax.__version__, threads=cpus, jax_backend=jax.default_backend())
    else:
        import numpy as np

        info.update(numpy=np.__version__, threads=threads)
    if family.startswith("keras-"):
        import keras

        info.update(keras=keras.__version__, keras_backend=keras.backend.backend())
    return info


def die_with_parent() -> None:
    """Ask Linux to kill this worker when its parent dies, even mid-case in a hung C call:
    a killed or timed-out runner must not leave a worker burning the cores."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the worker still exits when its pipe closes between cases
    if os.getppid() == 1:  # the parent died before the request took effect
        os._exit(1)


def redirect_output(log_path: str | None):
    """The libraries' own output goes to the run's log, not to the user's terminal."""
    log = open(log_path or os.devnull, "a", buffering=1)
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    sys.stdout = sys.stderr = log
    return log


def settle() -> None:
    """Between cases: collect what the last case left, then freeze what survives, so the next
    collection walks only the objects made since. A full collection with torch or TensorFlow
    loaded walks hundreds of thousands of long-lived objects and costs tens of milliseconds a
    case; frozen objects are still freed by reference counting (only a cycle among them would
    outlive its use, and the worker's lifetime bounds that)."""
    gc.collect()
    gc.freeze()
    return_free_memory()


def return_free_memory() -> None:
    """Give the memory the last case freed back to the system (MALLOC_TUNABLES keep it while a
    case runs), so one case does not hold it for the rest of the worker's life."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: it has its own way
        ctypes.CDLL(None).malloc_trim(0)


def warm_blas() -> None:
    """One small NumPy matmul: OpenBLAS sizes its buffers on first use, and that must not be the
    first case's allocation, nor happen under a `--mem-limit` cap (where it fails). Every
    worker computes or loads the float64 truth with NumPy, so every worker needs it."""
    import numpy as np

    for dtype in (np.float64, np.float32):  # large enough to take OpenBLAS's threaded path
        a = np.ones((512, 512), dtype=dtype)
        a @ a


def start_worker(family: str, threads: int) -> dict:
    """Import the family and size its thread pools; the process is then ready for cases."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C means
    die_with_parent()
    info = set_threads(family, threads)
    info["glibc_tunables"] = os.environ.get("GLIBC_TUNABLES")  # the allocator the figures had
    warm_blas()
    import scipy.special  # noqa: F401  (the stop rule's: loaded as workers start, not in a case)

    settle()
    return info
