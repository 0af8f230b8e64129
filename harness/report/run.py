"""A run directory as the reports see it: its records (every field present, unknown statuses
made errors), its env, its scaling fits, and its plan, which says what the run set out to
record and how it was timed.

The plan is data: plan.json, written before a run's first case, holds the planned case ids and
the timing settings. A run directory from before plans existed has none; its timing then comes
from its copy of the suite (suite.toml) or the defaults, and what it meant to record is unknown.
"""
from __future__ import annotations

import dataclasses
import shlex
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from harness.report.scaling import load_scaling
from harness.spec import TimingSettings
from harness.store import DamagedFile, PlanError, Plan, load_env, load_records, read_plan
from harness.store.records import complete
from harness.store.rundir import RESULTS

DEFAULT_BASELINE = "torch.naive"


@dataclass
class Run:
    """One run directory as the reports see it."""
    path: Path
    records: list[dict]
    env: dict
    baseline: str = DEFAULT_BASELINE
    scaling: dict = field(default_factory=dict)
    scaling_source: str = ""          # "scaling.json", "computed" or "" (nothing to fit)
    cut_line: bool = False            # results.jsonl ends in a half-written record
    plan: Plan | None = None          # plan.json, when the run has a readable one
    plan_error: str = ""              # why plan.json could not be read
    expected: int | None = None       # cases the plan holds; None without a plan
    missing: list[str] = field(default_factory=list)  # planned case ids with no record
    timing: TimingSettings = field(default_factory=TimingSettings)
    timing_source: str = ""

    @property
    def name(self) -> str:
        return self.env.get("suite") or (self.plan.suite if self.plan else "") or self.path.name

    @property
    def complete(self) -> bool:
        """Every planned case has a record (only a run with a plan can know it)."""
        return self.plan is not None and not self.missing

    def resume_command(self) -> str | None:
        """The command that finishes this run, from its plan; None without one (or for a side of
        an A/B, which `attnbench ab` runs, not `attnbench run`)."""
        if self.plan is None or "ab_side" in self.plan.extra:
            return None
        suite = self.plan.extra.get("suite_arg") or self.plan.suite_path or self.plan.suite
        return f"attnbench run {shlex.quote(suite)} --out {shlex.quote(str(self.path))} --resume"


def load_run(run_dir: str | Path, baseline: str | None = None) -> Run:
    path = Path(run_dir)
    records = [complete(r) for r in load_records(path)] if (path / RESULTS).exists() else []
    for r in records:
        r["reason"] = r["reason"] or ""
    try:
        env = load_env(path)
    except DamagedFile as exc:  # a damaged env.json costs the machine facts, not the report
        warnings.warn(f"{exc}; the report leaves the machine out", stacklevel=2)
        env = {}
    run = Run(path=path, records=records, env=env, baseline=baseline or DEFAULT_BASELINE)
    raw = (path / RESULTS).read_bytes() if (path / RESULTS).exists() else b""
    run.cut_line = bool(raw) and not raw.endswith(b"\n")
    run.scaling, run.scaling_source = load_scaling(path, records)
    try:
        run.plan = read_plan(path)
    except PlanError as exc:  # a damaged plan costs the completeness check, not the report
        run.plan_error = str(exc)
    if run.plan is not None:
        recorded = {r["case_id"] for r in records}
        run.expected = len(run.plan.case_ids)
        run.missing = [i for i in run.plan.case_ids if i not in recorded]
        run.timing, run.timing_source = run.plan.timing, _plan_source(run.plan)
    else:
        run.timing, run.timing_source = suite_timing(path)
    return run


def _plan_source(plan: Plan) -> str:
    names = {f.name for f in dataclasses.fields(TimingSettings)}
    changed = [k for k in plan.overrides if k in names]
    return "plan.json" + (f" (the command line set {', '.join(changed)})" if changed else "")


def suite_timing(path: Path) -> tuple[TimingSettings, str]:
    """A run without a plan: the [timing] table of its suite.toml, or the harness defaults."""
    suite_file = path / "suite.toml"
    if not suite_file.exists():
        return TimingSettings(), "the harness defaults (the run directory has no plan.json " \
                                 "or suite.toml)"
    try:
        import tomllib

        table = tomllib.loads(suite_file.read_text()).get("timing", {})
        names = {f.name for f in dataclasses.fields(TimingSettings)}
        settings = TimingSettings(**{k: v for k, v in table.items() if k in names})
    except (OSError, ValueError, TypeError, AttributeError):
        return TimingSettings(), "the harness defaults (suite.toml did not parse)"
    return settings, "suite.toml in the run directory (it has no plan.json)"
