"""The run directory: plan.json (what the run set out to measure), results.jsonl (records,
appended and flushed as they exist), env.json (the machine and software), suite.toml (a
copy of what was asked). Loads into pandas.

The file is append-only: a case measured again (a re-measurement after contention, the next
repeat) gets a new line, and the last line of a case is its record; loading returns that one.
A killed process can leave half a line at the end of results.jsonl; loading ignores it and
`RunDir.open_for_append` cuts it off before a resumed run appends.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from harness.store.records import RECORD_FIELDS

RESULTS = "results.jsonl"
ENV = "env.json"


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
    """The record of every case of a run (its last line), in the order cases were first
    recorded; a half-written last line (killed process) is skipped."""
    path = Path(run_dir) / RESULTS
    records: dict = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                break  # a write that was cut off; resume removes it
            if line.strip():
                record = json.loads(line)
                records[record.get("case_id", len(records))] = record
    return list(records.values())


def load_dataframe(run_dir: str | Path):
    """A run's records as a pandas DataFrame, one row per case (samples_s stays a list)."""
    import pandas as pd

    frame = pd.DataFrame(load_records(run_dir), columns=list(RECORD_FIELDS))
    return frame


def load_env(run_dir: str | Path) -> dict:
    return RunDir(run_dir).read_env()


