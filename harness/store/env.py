"""env.json: the machine and software a run measured on, and the fingerprint that decides
whether two runs' timings may be compared."""
from __future__ import annotations

import functools
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from harness.store.records import SCHEMA_VERSION, now_iso

# ---- environment capture -------------------------------------------------------------

PACKAGES = {"numpy": ("numpy",), "scipy": ("scipy",), "pandas": ("pandas",), "torch": ("torch",),
            "tensorflow": ("tensorflow", "tensorflow-cpu"), "keras": ("keras",),
            "xformers": ("xformers",), "jax": ("jax",), "jaxlib": ("jaxlib",)}


def package_versions() -> dict[str, str | None]:
    """Installed versions from package metadata, without importing anything."""
    import importlib.metadata as md

    out = {}
    for name, dists in PACKAGES.items():
        out[name] = None
        for dist in dists:
            try:
                out[name] = md.version(dist)
                break
            except md.PackageNotFoundError:
                continue
    return out


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's brand string from py-cpuinfo, which reads it on every architecture (ARM's
    /proc/cpuinfo has no "model name"); /proc/cpuinfo, then the platform module, without it."""
    try:
        import cpuinfo

        brand = (cpuinfo.get_cpu_info().get("brand_raw") or "").strip()
        if brand:
            return brand
    except Exception:  # noqa: BLE001 - a machine fact is never worth failing a run
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _blas_text(info: dict) -> str:
    """"openblas 0.3.27 (pthreads)" from one threadpoolctl entry: the library, its version and
    threading layer (its thread count is this process's setting, not a fact of the machine)."""
    name = f"{info.get('internal_api')} {info.get('version') or ''}".strip()
    layer = info.get("threading_layer")
    return f"{name} ({layer})" if layer and layer != "disabled" else name


def numpy_blas() -> str | None:
    """The BLAS library NumPy has loaded, as threadpoolctl sees it (None without either)."""
    try:
        import numpy
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    home = str(Path(numpy.__file__).parent)  # numpy/ and the wheel's numpy.libs/
    blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    mine = [i for i in blas if str(i.get("filepath", "")).startswith(home)] or blas
    return _blas_text(mine[0]) if mine else None


def torch_blas() -> str | None:
    """The BLAS torch was built with (BLAS_INFO: mkl, open, ...), the same text whether or not
    torch is loaded here: from torch.__config__ where it is, else from the build settings its
    headers carry (what __config__ prints), so the harness's own process never pays for
    loading torch. threadpoolctl cannot tell: x86 wheels link MKL statically. None where torch
    is not installed or does not say."""
    import importlib.util
    import re

    if "torch" in sys.modules:
        found = re.search(r"BLAS_INFO=([^,\s]+)", sys.modules["torch"].__config__.show())
        return found and found.group(1)
    spec = importlib.util.find_spec("torch")
    for home in (spec and spec.submodule_search_locations) or ():
        try:
            text = (Path(home) / "include" / "caffe2" / "core" / "macros.h").read_text()
        except OSError:
            continue
        found = re.search(r'\{"BLAS_INFO", "([^"]+)"\}', text)
        if found:
            return found.group(1)
    return None


def blas() -> dict[str, str | None]:
    """The BLAS each array library multiplies with: NumPy's (the reference, the numpy
    implementation) and torch's."""
    return {"numpy": numpy_blas(), "torch": torch_blas()}


def physical_cores() -> int:
    """Physical cores from /proc/cpuinfo (core ids per package), falling back to os.cpu_count()."""
    try:
        cores, phys = set(), None
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("physical id"):
                phys = line.split(":")[1].strip()
            elif line.startswith("core id"):
                cores.add((phys, line.split(":")[1].strip()))
        if cores:
            return len(cores)
    except OSError:
        pass
    return os.cpu_count() or 1


def gpus() -> list[dict]:
    """NVIDIA GPUs as nvidia-smi reports them; empty when there is none."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = [line.split(", ") for line in out.strip().splitlines() if line.strip()]
    return [{"name": r[0], "driver": r[1], "memory": r[2]} for r in rows if len(r) >= 3]


def git_commit(path: Path) -> dict:
    def git(*args):
        return subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True,
                              timeout=10)
    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"commit": None, "dirty": None}
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").stdout.strip())
        return {"commit": head.stdout.strip(), "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def host_env(threads: int) -> dict:
    """The machine and software of the host this runs on, with its fingerprint: what env.json
    keeps for each host of a run that cases ran on (`hosts`), and the top of every env.json."""
    project = Path(__file__).resolve().parents[2]
    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": physical_cores(),
        "threads": threads,
        "packages": package_versions(),
        "blas": blas(),
        "gpus": gpus(),
        "git": git_commit(project),
    }
    env["fingerprint"] = fingerprint(env)
    return env


def capture_env(threads: int, suite_name: str, argv: list[str] | None = None) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "suite": suite_name,
        "started_at": now_iso(),
        "argv": argv if argv is not None else sys.argv,
        **host_env(threads),
        "workers": {},
    }


# ---- comparability ----------------------------------------------------------------------

FINGERPRINT_PACKAGES = ("torch", "tensorflow", "keras", "xformers", "numpy")
LATER_PACKAGES = ("jax", "jaxlib")  # in a fingerprint only where the env.json records them
_MACHINES = ("x86_64", "amd64", "aarch64", "arm64", "ppc64le", "s390x", "riscv64", "i686")


def _machine(platform_string: str | None) -> str | None:
    """The machine architecture inside `platform.platform()`'s string (x86_64, arm64, ...)."""
    for token in (platform_string or "").lower().split("-"):
        if token in _MACHINES:
            return token
    return None


def fingerprint(env: dict) -> dict:
    """The fields of an env.json that decide whether two runs' timings may be compared: the
    CPU model, the GPUs with their driver, Python major.minor, the versions of the frameworks
    that run the kernels, the BLAS libraries, the thread count and the machine architecture.
    Computed from the env alone, so runs recorded before it existed get one too; a field the
    env predates (JAX's versions, the BLAS) is left out rather than read as "absent", and
    `differences` compares only the fields both sides have."""
    python = env.get("python") or ""
    packages = env.get("packages") or {}
    gpus = ", ".join(f"{g.get('name')} (driver {g.get('driver')})" for g in env.get("gpus") or [])
    out = {
        "cpu": env.get("cpu"),
        "gpus": gpus or None,
        "python": ".".join(python.split(".")[:2]) or None,
        "machine": _machine(env.get("platform")),
        "threads": env.get("threads"),
        **{name: packages.get(name) for name in FINGERPRINT_PACKAGES},
        **{name: packages[name] for name in LATER_PACKAGES if name in packages},
    }
    if isinstance(env.get("blas"), dict):
        out["blas"] = "; ".join(f"{lib} {name}" for lib, name in sorted(env["blas"].items())
                                if name) or None
    return out


def differences(a: dict, b: dict) -> list[tuple[str, object, object]]:
    """(field, a's value, b's value) for every field two fingerprints both hold and disagree
    on: a field one of them lacks was recorded after that run, so it says nothing."""
    return [(k, a[k], b[k]) for k in a if k in b and a[k] != b[k]]
