"""Workers start with glibc's malloc thresholds fixed, so whether a case's temporaries are faulted
in afresh on every call does not depend on what the worker ran before."""
import os
import subprocess
import sys

import pytest

from harness.run.process import MALLOC_TUNABLES, malloc_tunables, worker_env

# Three 16 MiB arrays alive at once, then freed, eight times: the pattern of a naive attention's
# temporaries. Prints the page faults of each round.
ROUNDS = """
import resource
import numpy as np
counts = []
for _ in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    held = [np.ones(16 << 17) for _ in range(3)]
    del held
    counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(*counts)
"""


def faults_per_round(env: dict) -> list[int]:
    done = subprocess.run([sys.executable, "-c", ROUNDS], env=env, capture_output=True,
                          text=True, check=True)
    return [int(n) for n in done.stdout.split()]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's tunables")
def test_a_worker_reuses_the_memory_of_its_last_call():
    plain = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    default = faults_per_round(plain)
    fixed = faults_per_round({**plain, **worker_env("numpy", 1)})
    # glibc's dynamic rule returns the freed 48 MiB to the system after every round...
    assert min(default[2:]) > 100, default
    # ...the fixed thresholds keep it: only the first round faults its pages in
    assert fixed[0] > 100 and max(fixed[1:]) < 0.05 * fixed[0], fixed


def test_a_tunable_the_user_set_keeps_its_value():
    given = "glibc.malloc.trim_threshold=1:glibc.cpu.hwcaps=-AVX512F"
    parts = malloc_tunables(given).split(":")
    assert parts[:2] == given.split(":")
    assert parts[2:] == [f"glibc.malloc.mmap_threshold={MALLOC_TUNABLES['glibc.malloc.mmap_threshold']}"]
    assert malloc_tunables("") == ":".join(f"{k}={v}" for k, v in MALLOC_TUNABLES.items())


KEPT_THEN_RETURNED = """
import numpy as np
from harness.run.process import return_free_memory

def rss_mib():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20

start = rss_mib()
held = [np.ones(8 << 17) for _ in range(25)]  # 200 MiB in blocks of 8 MiB, touched
del held
kept = rss_mib()
return_free_memory()
print(start, kept, rss_mib())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's tunables")
def test_what_a_case_freed_is_returned_between_cases():
    env = {**os.environ, **worker_env("numpy", 1)}
    done = subprocess.run([sys.executable, "-c", KEPT_THEN_RETURNED], env=env,
                          capture_output=True, text=True, check=True)
    start, kept, returned = map(float, done.stdout.split())
    assert kept - start > 150  # kept while the case runs...
    assert returned - start < 50  # ...and given back by the settling between cases


def test_a_capped_worker_keeps_glibcs_own_rule(monkeypatch):
    """--mem-limit counts the heap's growth: memory kept for reuse would escape it."""
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert "GLIBC_TUNABLES" not in worker_env("numpy", 1, capped=True)
    assert "glibc.malloc.mmap_threshold" in worker_env("numpy", 1)["GLIBC_TUNABLES"]
