"""The run directory: plan.json (what the run set out to measure), results.jsonl (records,
appended and flushed as they exist), env.json (the machine and software), suite.toml (a
copy of what was asked). Loads into pandas.

The file is append-only: a case measured again (a re-measurement after contention, the next
repeat) gets a new line, and the last line of a case is its record; loading returns that one.
A killed process can leave half a line at the end of results.jsonl; loading ignores it and
`RunDir.open_for_append` cuts it off before a resumed run appends. Any other line that is not a
record (a disk error, an edit gone wrong) is skipped with a `DamagedLineWarning` naming it, so
the rest of the run stays readable and `--resume` measures the lost cases again.

A run directory's life is kept here, whichever command runs it (run, ab, recommend, profile):
it gets its name (`RunDir.named`), refuses to take a second run (`RunDir.refuse_if_held`),
`RunDir.start` writes its plan, env.json and the suite's copy, `RunDir.folder` holds a
command's own files (profile's), `RunDir.note_env` adds what workers, hosts and executors
report as the run goes, and `RunDir.rewrite` replaces the records when an A/B's second pass
supersedes its first. Every file is strict JSON (`json_safe`: a non-finite number is null,
which `load_dataframe` reads back as NaN): results.jsonl one `record_line` at a time, the
others by `write_json`, written whole, then renamed, so a reader never sees half a file.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import warnings
from datetime import datetime
from pathlib import Path

from harness.constants import STATUSES
from harness.store.env import capture_env, physical_cores
from harness.store.records import RECORD_FIELDS, complete
from harness.store.schema import FIELD_TYPES, NUMBER_FIELDS, NUMBER_LISTS
from harness.values import BadValue

RESULTS = "results.jsonl"
ENV = "env.json"
PLAN = "plan.json"
SUITE_COPY = "suite.toml"
RESULTS_ROOT = Path("results")  # where a run goes when no directory is given
# env.json keys the harness reads, and the type each must have
ENV_TYPES = {"peaks": dict, "peaks_error": str, "workers": dict, "resumed_at": list,
             "packages": dict, "git": dict, "fingerprint": dict, "gpus": list, "argv": list, "threads": int,
             "mem_limit_bytes": int, "suite": str, "python": str, "platform": str, "cpu": str,
             "started_at": str, "hosts": dict, "executors": list}


class DamagedFile(ValueError):
    """A run file that cannot be read as attnbench wrote it; str() is one line naming it."""


class DamagedLineWarning(UserWarning):
    """A line of results.jsonl that is not a record was skipped."""


class NotARunDir(BadValue):
    """A path given as a run directory that holds no results.jsonl; str() is one line."""


def require_run_dir(path: str | Path, where: str = "") -> Path:
    """`path` when it is a run directory (it holds results.jsonl), else NotARunDir naming it
    (and `where`, the option that gave it)."""
    path = Path(path)
    if not (path / RESULTS).is_file():
        raise NotARunDir(f"{where}: " * bool(where) + f"{path} is not a run directory (no "
                         f"{RESULTS}): expected a directory written by `attnbench run` or "
                         "`attnbench ab`")
    return path


def timestamped(name: str, root: str | Path = RESULTS_ROOT) -> Path:
    """root/NAME-YYYYmmdd-HHMMSS: the directory of a new run when none is given."""
    return Path(root) / f"{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def latest(name: str, root: str | Path = RESULTS_ROOT) -> Path | None:
    """The newest directory `timestamped(name)` made that holds records (None: there is none)."""
    runs = sorted(Path(root).glob(f"{name}-*/{RESULTS}"))
    return runs[-1].parent if runs else None


def make_dir(path: str | Path, where: str = "--out") -> Path:
    """Create a directory; a place the system refuses is the user's to change (BadValue naming
    `where`, the option that chose it)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadValue(f"{where}: cannot create {path} ({exc.strerror})") from None
    return path


def json_safe(value):
    """`value` as strict JSON data: NaN and infinities as None (strict parsers reject them),
    tuples as lists, numpy scalars as Python numbers, anything else JSON has no type for
    (a path) as its text."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()  # a numpy scalar
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def write_json(path: str | Path, data, indent: int = 1) -> Path:
    """`data` as strict JSON (json_safe), written whole, then renamed over `path`."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(json_safe(data), indent=indent, allow_nan=False) + "\n")
    tmp.replace(path)
    return path


def record_line(record: dict) -> str:
    """One record as its line of results.jsonl: strict JSON (json_safe), so every JSON
    parser reads it; a non-finite number is written as null and `load_dataframe` reads it
    back as NaN."""
    return json.dumps(json_safe(record), allow_nan=False) + "\n"


class RunDir:
    """One run's directory. Records are appended one JSON line at a time and fsync'ed."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.results_path = self.path / RESULTS
        self.env_path = self.path / ENV
        self.logs = self.path / "logs"
        self._fh = None
        self._env: dict | None = None

    @classmethod
    def named(cls, name: str, given: str | Path | None = None) -> RunDir:
        """The directory a command writes into: `given` (its --out), else a new one under
        results/ named `name` and the time (`timestamped`)."""
        return cls(given if given is not None else timestamped(name))

    def records(self) -> list[dict]:
        return load_records(self.path) if self.results_path.exists() else []

    def refuse_if_held(self, instead: str = "", where: str = "--out") -> None:
        """BadValue naming `where` when the directory already holds records: a new run never
        adds its records to another run's. `instead` (e.g. "pass --resume to finish that run,
        or ") tells the user what else they may do."""
        held = len(self.records())
        if held:
            raise BadValue(f"{where}: {self.path} already holds {held} records; {instead}choose "
                           "another directory")

    def folder(self, name: str, where: str = "--out") -> Path:
        """PATH/name, created (BadValue naming `where` when it cannot be): the files a command
        keeps beside a run's own (profile's traces), in a directory that may hold a run."""
        return make_dir(self.path / name, where)

    def save_json(self, name: str, data, indent: int = 1) -> Path:
        """PATH/name holding `data` as strict JSON, written whole (`write_json`)."""
        return write_json(self.path / name, data, indent)

    def recorded_ids(self) -> set[str]:
        return {r["case_id"] for r in self.records()}

    def open_for_append(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        _cut_partial_last_line(self.results_path)
        self._fh = open(self.results_path, "a", encoding="utf-8")

    def append(self, record: dict) -> None:
        self._fh.write(record_line(record))
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def rewrite(self, records: list[dict]) -> None:
        """results.jsonl replaced by `records`, one line each, written whole, then renamed: an
        A/B's second pass supersedes the first's lines of the cases it measured again."""
        tmp = self.results_path.with_name(RESULTS + ".tmp")
        tmp.write_text("".join(map(record_line, records)))
        tmp.replace(self.results_path)

    def close(self) -> None:
        if self._fh:
            self._fh.close()
            self._fh = None

    def start(self, plan, env: dict | None = None, suite_path: str | Path | None = None,
              where: str = "--out", **notes) -> dict:
        """Make the directory ready for `plan` (a harness.store.plan.Plan): created (BadValue
        naming `where` if it cannot be), plan.json written, env.json begun with `notes` added
        (see `note_env`), and a copy of the suite file beside them. `env` starts a fresh
        env.json (an A/B side's, captured by its own interpreter) and a fresh suite copy;
        without it the run keeps what an earlier start of it left, else captures this machine's
        now. Returns env.json's content."""
        make_dir(self.path, where)
        write_json(self.path / PLAN, plan.to_dict())
        fresh = env is not None
        if not fresh:
            env = self.read_env() or capture_env(plan.overrides.get("threads") or
                                                 physical_cores(), plan.suite)
        copy = self.path / SUITE_COPY
        if suite_path and (fresh or not copy.exists()):
            shutil.copyfile(suite_path, copy)
        self._env = env
        return self.note_env(**notes)

    @property
    def env(self) -> dict:
        """env.json as this run keeps it: read once, then kept up to date by `note_env`."""
        if self._env is None:
            self._env = self.read_env()
        return self._env

    def note_env(self, **notes) -> dict:
        """Add what the run learns as it goes to env.json, and write it: a dict merges into
        the key's dict (`workers={"torch": info}`, `hosts={host: entry}`), a list extends the
        key's list (`executors=[...]`, `resumed_at=[when]`), any other value (or a key not
        there yet) sets the key; a None note is no note. Returns env.json's content."""
        env = self.env
        for key, value in notes.items():
            if value is None:
                continue
            if isinstance(value, dict) and isinstance(env.get(key), dict):
                env[key].update(value)
            elif isinstance(value, list) and isinstance(env.get(key), list):
                env[key].extend(value)
            else:
                env[key] = dict(value) if isinstance(value, dict) else value
        write_json(self.env_path, env, indent=2)
        return env

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


def _of_type(value, kind: type) -> bool:
    """Whether a JSON value has a field's type: a float takes any number, an int a whole one
    (a tool that rewrote the file may have written 4096 as 4096.0), and JSON's true and false
    are no number."""
    if kind is float:
        return _number(value)
    if kind is int and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))


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
    for key, kind in FIELD_TYPES.items():
        value = record.get(key)
        if value is not None and not _of_type(value, kind):
            return None, f"field {key!r}: expected {kind.__name__}, got {type(value).__name__}"
    for key in NUMBER_LISTS:
        if record.get(key):
            record[key] = [math.nan if v is None else v for v in record[key]]
    return record, None


def load_dataframe(run_dir: str | Path):
    """A run's records as a pandas DataFrame, one row per case (samples_s stays a list).

    One column per RECORD_FIELDS field, in schema order (null where an older run lacks a
    field), then a column for each key the schema does not declare (a newer run, a hand-edited
    file), in the order first seen: nothing that was recorded is dropped."""
    import pandas as pd

    records = [complete(r) for r in load_records(run_dir)]
    frame = pd.DataFrame(records, columns=record_columns(records))
    # a number column is float even where every row is null (a non-finite figure, written
    # as null, or one never measured): NaN, as pandas shows a missing number
    return frame.astype(dict.fromkeys(NUMBER_FIELDS, "float64"))


def record_columns(records: list[dict]) -> list[str]:
    """RECORD_FIELDS, then the undeclared keys of `records` in the order first seen."""
    columns = dict.fromkeys(RECORD_FIELDS)
    for record in records:
        columns.update(dict.fromkeys(record))
    return list(columns)


def load_env(run_dir: str | Path) -> dict:
    return RunDir(run_dir).read_env()


