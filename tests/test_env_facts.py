"""env.json's machine facts: JAX's versions, the CPU's name on any architecture, the BLAS NumPy
and torch call; and a run recorded before these facts existed still compares with a new one."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from harness.store import env as env_facts
from harness.store.env import differences, fingerprint, host_env

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def here() -> dict:
    return host_env(threads=2)


def test_env_records_jax_the_cpu_and_the_blas(here):
    import importlib.metadata as md

    assert set(here["packages"]) >= {"jax", "jaxlib", "torch", "numpy"}
    for name in ("jax", "jaxlib"):
        try:
            assert here["packages"][name] == md.version(name)
        except md.PackageNotFoundError:
            assert here["packages"][name] is None
    assert here["cpu"] and here["cpu"] not in ("", "unknown")
    assert set(here["blas"]) == {"numpy", "torch"}
    assert here["blas"]["numpy"]  # NumPy always links a BLAS
    fp = here["fingerprint"]
    assert fp["jax"] == here["packages"]["jax"] and fp["jaxlib"] == here["packages"]["jaxlib"]
    assert here["blas"]["numpy"] in fp["blas"]


def test_recording_the_environment_loads_neither_jax_nor_torch():
    import subprocess

    loaded = subprocess.run([sys.executable, "-c", "import sys; from harness.store.env import "
                             "host_env; host_env(2); print(sorted({'jax', 'jaxlib', 'torch', "
                             "'tensorflow'} & set(sys.modules)))"],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "[]"


def test_the_cpu_name_comes_from_py_cpuinfo_with_proc_cpuinfo_as_the_fallback(monkeypatch):
    import cpuinfo

    env_facts.cpu_model.cache_clear()
    monkeypatch.setattr(cpuinfo, "get_cpu_info", lambda: {"brand_raw": " Neoverse-V2 "})
    assert env_facts.cpu_model() == "Neoverse-V2"
    env_facts.cpu_model.cache_clear()

    def broken():
        raise RuntimeError("no cpuid here")

    monkeypatch.setattr(cpuinfo, "get_cpu_info", broken)
    assert env_facts.cpu_model()  # /proc/cpuinfo or the platform module
    env_facts.cpu_model.cache_clear()


def test_torch_blas_reads_the_same_with_and_without_torch_loaded():
    import subprocess

    asked = subprocess.run([sys.executable, "-c", "import torch; from harness.store.env import "
                            "torch_blas; print(torch_blas())"],
                           capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert asked.returncode == 0, asked.stderr
    if "torch" in sys.modules:  # another test loaded it here: ask a process that has not
        asked_cold = subprocess.run([sys.executable, "-c", "from harness.store.env import "
                                     "torch_blas; print(torch_blas())"],
                                    capture_output=True, text=True, timeout=300, cwd=ROOT)
        cold = asked_cold.stdout.strip()
    else:
        cold = env_facts.torch_blas()
    assert cold and cold == asked.stdout.strip()  # "mkl" on x86 wheels, "open" for OpenBLAS


def old_env(**changes) -> dict:
    """An env.json from before JAX and the BLAS were recorded."""
    env = {"python": "3.11.9", "platform": "Linux-6.1-x86_64-with-glibc2.36",
           "cpu": "AMD EPYC", "threads": 2, "gpus": [],
           "packages": {"numpy": "2.4.6", "torch": "2.13.0+cpu", "tensorflow": None,
                        "keras": None, "xformers": None}}
    env.update(changes)
    return env


def new_env(**changes) -> dict:
    env = old_env()
    env["packages"] = {**env["packages"], "jax": "0.10.2", "jaxlib": "0.10.2"}
    env["blas"] = {"numpy": "openblas 0.3.31 (pthreads)", "torch": "mkl"}
    env.update(changes)
    return env


def test_a_run_recorded_before_the_new_facts_still_compares_with_a_new_one():
    old, new = fingerprint(old_env()), fingerprint(new_env())
    assert "jax" not in old and "blas" not in old
    assert differences(old, new) == [] and differences(new, old) == []


def test_the_new_facts_tell_runs_apart_once_both_record_them():
    jax_upgrade = new_env(packages={**new_env()["packages"], "jax": "0.11.0"})
    assert differences(fingerprint(new_env()), fingerprint(jax_upgrade)) == [
        ("jax", "0.10.2", "0.11.0")]
    other_blas = new_env(blas={"numpy": "mkl 2024.2 (intel)", "torch": "mkl"})
    assert [d[0] for d in differences(fingerprint(new_env()), fingerprint(other_blas))] == ["blas"]
    assert [d[0] for d in differences(fingerprint(old_env()), fingerprint(old_env(cpu="Xeon")))] \
        == ["cpu"]
