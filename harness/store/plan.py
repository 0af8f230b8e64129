"""plan.json: what a run set out to measure, written before its first case.

The plan is data: the suite, the filters and overrides that narrowed it, the timing settings and
every planned case. Report (complete or not, which cases are missing), resume (which cases are
left, and whether the request still matches) and compare (which cases a run meant to have) read
it; nothing re-parses a command line.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from harness.spec import Case, TimingSettings
from harness.store.rundir import DamagedFile

PLAN = "plan.json"
PLAN_VERSION = 1


class PlanError(DamagedFile):
    """A plan.json that cannot be read; str() is one line naming the file."""


@dataclass(frozen=True)
class Plan:
    suite: str
    suite_path: str | None
    filters: dict  # option -> the values it kept, e.g. {"impl": ["torch.*"], "seq_len": [128]}
    overrides: dict  # what the request changed: timing settings, mem_limit_bytes, threads
    timing: TimingSettings
    cases: tuple[Case, ...]
    created_at: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def case_ids(self) -> list[str]:
        return [c.case_id for c in self.cases]

    def to_dict(self) -> dict:
        return {"plan_version": PLAN_VERSION, "suite": self.suite, "suite_path": self.suite_path,
                "filters": self.filters, "overrides": self.overrides,
                "timing": dataclasses.asdict(self.timing), "created_at": self.created_at,
                **self.extra, "case_ids": self.case_ids, "cases": [c.to_dict() for c in self.cases]}

    @classmethod
    def from_dict(cls, data: dict) -> "Plan":
        known = {f.name for f in dataclasses.fields(TimingSettings)}
        timing = TimingSettings(**{k: v for k, v in (data.get("timing") or {}).items()
                                   if k in known})
        core = {"plan_version", "suite", "suite_path", "filters", "overrides", "timing",
                "created_at", "case_ids", "cases"}
        return cls(suite=data["suite"], suite_path=data.get("suite_path"),
                   filters=data.get("filters") or {}, overrides=data.get("overrides") or {},
                   timing=timing, cases=tuple(Case.from_dict(c) for c in data["cases"]),
                   created_at=data.get("created_at", ""),
                   extra={k: v for k, v in data.items() if k not in core})

    def differences(self, other: "Plan") -> list[str]:
        """What another request changes about this plan, in words (empty: the same run)."""
        out = []
        if self.suite != other.suite:
            out.append(f"suite {self.suite!r} vs {other.suite!r}")
        if self.filters != other.filters:
            out.append(f"filters {self.filters} vs {other.filters}")
        if self.case_ids != other.case_ids:
            mine, theirs = set(self.case_ids), set(other.case_ids)
            out.append(f"{len(theirs - mine)} cases not in the plan, "
                       f"{len(mine - theirs)} planned cases left out")
        return out


def write_plan(run_dir: str | Path, plan: Plan) -> Path:
    path = Path(run_dir) / PLAN
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(plan.to_dict(), indent=1) + "\n")
    tmp.replace(path)
    return path


def read_plan(run_dir: str | Path) -> Plan | None:
    """The run's plan; None for a run directory that has none (written before plans existed)."""
    path = Path(run_dir) / PLAN
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Plan.from_dict(data)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise PlanError(f"{path}: not a readable plan ({type(exc).__name__}: {exc})") from None
