"""A deliberately slowed `numpy` and `torch.naive`, for the A/B tests.

Loaded through $ATTNBENCH_PLUGINS, this module replaces the two built-in adapters under their own
names (so case ids match a normal run). With $ATTNBENCH_TEST_SLOWDOWN=F each call busy-waits
until it has taken (1 + F) times as long as the real call did; unset or 0, nothing changes.
Give the variables to the head side only (`attnbench ab --head-env ...`) to fake a regression.
With $ATTNBENCH_TEST_SLOW_ONCE_DIR as well, only the first preparation of each case is slowed
(a marker file per case in that directory, seen by every worker process): a regression that a
re-measurement does not confirm. With $ATTNBENCH_TEST_SLOW_SEQ_LEN=N only cases of that seq_len
are slowed (a figure that contradicts its neighbours); with $ATTNBENCH_TEST_SLOW_IMPL=NAME only
that implementation.
"""
from __future__ import annotations

import os
import time

from impls.numpy_ref import NumpyAttention
from impls.torch_naive import TorchNaive

SLOWDOWN_ENV = "ATTNBENCH_TEST_SLOWDOWN"
ONCE_ENV = "ATTNBENCH_TEST_SLOW_ONCE_DIR"
SEQ_LEN_ENV = "ATTNBENCH_TEST_SLOW_SEQ_LEN"
IMPL_ENV = "ATTNBENCH_TEST_SLOW_IMPL"


def _first_time(case) -> bool:
    """True the first time any process asks about this case (when $ATTNBENCH_TEST_SLOW_ONCE_DIR
    is set; always True otherwise)."""
    folder = os.environ.get(ONCE_ENV)
    if not folder:
        return True
    try:
        fd = os.open(os.path.join(folder, case.case_id.replace("/", "_")),
                     os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def _slowed(adapter_class):
    class Slowed(adapter_class):
        description = f"{adapter_class.name}, slowed by ${SLOWDOWN_ENV} (test adapter)"

        def prepare(self, case, inputs):
            prepared = super().prepare(case, inputs)
            factor = float(os.environ.get(SLOWDOWN_ENV) or 0)
            only = os.environ.get(SEQ_LEN_ENV)
            impl = os.environ.get(IMPL_ENV)
            if (factor <= 0 or (only and int(only) != case.seq_len)
                    or (impl and impl != case.impl) or not _first_time(case)):
                return prepared
            inner, sync, clock = prepared.call, prepared.sync, time.perf_counter

            def call():
                start = clock()
                out = inner()
                sync()
                until = start + (clock() - start) * (1 + factor)
                while clock() < until:
                    pass
                return out

            prepared.call = call
            return prepared

    Slowed.__name__ = f"Slowed{adapter_class.__name__}"
    return Slowed()


ADAPTERS = [_slowed(NumpyAttention), _slowed(TorchNaive)]
