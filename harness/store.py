"""The run directory: results.jsonl (one record per case, appended and flushed as it exists),
env.json (the machine and software), suite.toml (a copy of what was asked). Loads into pandas.

A killed process can leave half a line at the end of results.jsonl; loading ignores it and
`RunDir.open_for_append` cuts it off before a resumed run appends.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

SCHEMA_VERSION = 1
RESULTS = "results.jsonl"
ENV = "env.json"

# Every record has these keys (None where a case did not get that far), so DataFrames from
# different runs have the same columns.
RECORD_FIELDS = (
    "schema_version", "case_id", "impl", "level", "mode", "device", "dtype", "batch", "heads",
    "seq_len", "seq_len_kv", "head_dim", "causal", "seed", "padding", "norm", "ffn_mult",
    "status", "reason", "kernel",
    "median_s", "ci_low_s", "ci_high_s", "ci_rel", "converged", "iqr_s", "min_s", "mean_s",
    "std_s", "n_samples", "calls_per_sample", "warmup_calls", "samples_s",
    "max_abs_err", "rel_err", "tolerance", "out_dtype", "grad_errors", "grad_err_ratio",
    "flops", "tflops", "pct_of_peak", "peak_mem_bytes", "mem_method", "oom_bytes", "predicted",
    "threads", "worker", "started_at", "wall_s",
)
STATUSES = ("ok", "unsupported", "mismatch", "oom", "timeout", "error")
FAILED_STATUSES = ("mismatch", "oom", "timeout", "error")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def make_record(case, result: dict, **extra) -> dict:
    """A complete record: every RECORD_FIELDS key, the case's fields, then what was measured."""
    record = dict.fromkeys(RECORD_FIELDS)
    record.update(schema_version=SCHEMA_VERSION, case_id=case.case_id, **case.to_dict())
    record.update(result)
    record.update(extra)
    return record


class RunDir:
    """One run's directory. Records are appended one JSON line at a time and fsync'ed."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.results_path = self.path / RESULTS
        self.env_path = self.path / ENV
        self.logs = self.path / "logs"
        self._fh = None

    def records(self) -> list[dict]:
        return load_records(self.path) if self.results_path.exists() else []

    def recorded_ids(self) -> set[str]:
        return {r["case_id"] for r in self.records()}

    def open_for_append(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        _cut_partial_last_line(self.results_path)
        self._fh = open(self.results_path, "a", encoding="utf-8")

    def append(self, record: dict) -> None:
        self._fh.write(json.dumps(record, allow_nan=True) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh:
            self._fh.close()
            self._fh = None

    def write_env(self, env: dict) -> None:
        tmp = self.env_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(env, indent=2, default=str))
        tmp.replace(self.env_path)

    def read_env(self) -> dict:
        return json.loads(self.env_path.read_text()) if self.env_path.exists() else {}


def _cut_partial_last_line(path: Path) -> None:
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    path.write_bytes(data[: data.rfind(b"\n") + 1])


def load_records(run_dir: str | Path) -> list[dict]:
    """All complete records of a run; a half-written last line (killed process) is skipped."""
    path = Path(run_dir) / RESULTS
    records = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                break  # a write that was cut off; resume removes it
            if line.strip():
                records.append(json.loads(line))
    return records


def load_dataframe(run_dir: str | Path):
    """A run's records as a pandas DataFrame, one row per case (samples_s stays a list)."""
    import pandas as pd

    frame = pd.DataFrame(load_records(run_dir), columns=list(RECORD_FIELDS))
    return frame


def load_env(run_dir: str | Path) -> dict:
    return RunDir(run_dir).read_env()


# ---- environment capture -------------------------------------------------------------

PACKAGES = {"numpy": ("numpy",), "scipy": ("scipy",), "pandas": ("pandas",), "torch": ("torch",),
            "tensorflow": ("tensorflow", "tensorflow-cpu"), "keras": ("keras",),
            "xformers": ("xformers",)}


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


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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


def capture_env(threads: int, suite_name: str, argv: list[str] | None = None) -> dict:
    project = Path(__file__).resolve().parent.parent
    env = {
        "schema_version": SCHEMA_VERSION,
        "suite": suite_name,
        "started_at": now_iso(),
        "argv": argv if argv is not None else sys.argv,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": physical_cores(),
        "threads": threads,
        "packages": package_versions(),
        "gpus": gpus(),
        "git": git_commit(project),
        "workers": {},
    }
    env["fingerprint"] = fingerprint(env)
    return env


# ---- comparability ----------------------------------------------------------------------

FINGERPRINT_PACKAGES = ("torch", "tensorflow", "keras", "xformers", "numpy")
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
    that run the kernels, the thread count and the machine architecture. Computed from the
    env alone, so runs recorded before it existed get one too."""
    python = env.get("python") or ""
    packages = env.get("packages") or {}
    gpus = ", ".join(f"{g.get('name')} (driver {g.get('driver')})" for g in env.get("gpus") or [])
    return {
        "cpu": env.get("cpu"),
        "gpus": gpus or None,
        "python": ".".join(python.split(".")[:2]) or None,
        "machine": _machine(env.get("platform")),
        "threads": env.get("threads"),
        **{name: packages.get(name) for name in FINGERPRINT_PACKAGES},
    }
