"""The run directory: plan.json (what the run set out to measure), results.jsonl (records,
appended and flushed as they exist), env.json (the machine and software), suite.toml (a
copy of what was asked). Loads into pandas.

The file is append-only: a case measured again (a re-measurement after contention, the next
repeat) gets a new line, and the last line of a case is its record; loading returns that one.
A killed process can leave half a line at the end of results.jsonl; loading ignores it and
`RunDir.open_for_append` cuts it off before a resumed run appends. Any other line that is not a
record (a disk error, an edit gone wrong) is skipped with a `DamagedLineWarning` naming it, so
the rest of the run stays readable and `--resume` measures the lost cases again.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from harness.constants import STATUSES
from harness.store.records import RECORD_FIELDS

RESULTS = "results.jsonl"
ENV = "env.json"
# env.json keys the harness reads, and the type each must have
ENV_TYPES = {"peaks": dict, "workers": dict, "resumed_at": list, "packages": dict, "git": dict,
             "fingerprint": dict, "gpus": list, "argv": list, "threads": int,
             "mem_limit_bytes": int, "suite": str, "python": str, "platform": str, "cpu": str,
             "started_at": str, "hosts": dict, "executors": list}


class DamagedFile(ValueError):
    """A run file that cannot be read as attnbench wrote it; str() is one line naming it."""


class DamagedLineWarning(UserWarning):
    """A line of results.jsonl that is not a record was skipped."""


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
        """env.json as written ({} when there is none); DamagedFile when it is not that."""
        if not self.env_path.exists():
            return {}
        try:
            env = json.loads(self.env_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise DamagedFile(f"{self.env_path}: damaged ({type(exc).__name__}: {exc}); move it "
                              "away to start the run's environment afresh") from None
        problem = env_problem(env)
        if problem:
            raise DamagedFile(f"{self.env_path}: damaged ({problem}); move it away to start the "
                              "run's environment afresh")
        return env


def env_problem(env) -> str | None:
    """What makes `env` unlike an env.json attnbench writes, or None."""
    if not isinstance(env, dict):
        return f"expected a JSON object, got {type(env).__name__}"
    for key, kind in ENV_TYPES.items():
        value = env.get(key)
        if value is not None and (not isinstance(value, kind) or
                                  (kind is int and isinstance(value, bool))):
            return f"key {key!r}: expected {kind.__name__}, got {type(value).__name__}"
    for device, peak in (env.get("peaks") or {}).items():
        flops = peak.get("matmul_tflops") if isinstance(peak, dict) else None
        if not isinstance(flops, dict) or \
                not all(map(_number, [*flops.values(), peak.get("bandwidth_gbs", 0)])):
            return f"key 'peaks.{device}': expected matmul_tflops and bandwidth_gbs figures"
    return None


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# record fields the harness computes with, and the type each must have (None is allowed)
RECORD_TYPES = {**dict.fromkeys(("impl", "level", "mode", "device", "dtype"), str),
                **dict.fromkeys(("batch", "heads", "seq_len", "seq_len_kv", "head_dim"), int),
                **dict.fromkeys(("median_s", "ci_low_s", "ci_high_s", "min_s", "flops", "tflops",
                                 "peak_mem_bytes", "max_abs_err", "rel_err"), float),
                "samples_s": list, "repeat_medians_s": list, "contention": dict}


def _cut_partial_last_line(path: Path) -> None:
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    path.write_bytes(data[: data.rfind(b"\n") + 1])


def load_records(run_dir: str | Path) -> list[dict]:
    """The record of every case of a run (its last line), in the order cases were first
    recorded. A half-written last line (killed process) is skipped silently; any other line
    that is not a record is skipped with a DamagedLineWarning."""
    path = Path(run_dir) / RESULTS
    records: dict = {}
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError as exc:
        raise DamagedFile(f"{path}: cannot be read ({exc.strerror})") from None
    for number, line in enumerate(lines[:-1], start=1):  # the last piece has no newline
        if not line.strip():
            continue
        record, problem = _parse_record(line)
        if problem:
            warnings.warn(DamagedLineWarning(f"{path}: line {number} skipped: {problem}"),
                          stacklevel=2)
        else:
            records[record["case_id"]] = record
    return list(records.values())


def _parse_record(line: bytes) -> tuple[dict | None, str | None]:
    try:
        record = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return None, f"not a JSON record ({type(exc).__name__})"
    if not isinstance(record, dict):
        return None, f"expected a JSON object, got {type(record).__name__}"
    if not isinstance(record.get("case_id"), str) or record.get("status") not in STATUSES:
        return None, "a JSON object without a case_id and a known status"
    for key, kind in RECORD_TYPES.items():
        value = record.get(key)
        if value is not None and not (_number(value) if kind is float else
                                      isinstance(value, kind) and not isinstance(value, bool)):
            return None, f"field {key!r}: expected {kind.__name__}, got {type(value).__name__}"
    return record, None


def load_dataframe(run_dir: str | Path):
    """A run's records as a pandas DataFrame, one row per case (samples_s stays a list)."""
    import pandas as pd

    frame = pd.DataFrame(load_records(run_dir), columns=list(RECORD_FIELDS))
    return frame


def load_env(run_dir: str | Path) -> dict:
    return RunDir(run_dir).read_env()


