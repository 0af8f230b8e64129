"""The end of a run, whichever command ran it (`attnbench run`, each side of `attnbench ab`):
its scaling fits written beside its records (scaling.json), its reports rendered, and what the
command shows at the end returned to it: first of all the answer, which implementation to use
for each measured shape (harness.analysis.recommend)."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from harness.analysis import scaling
from harness.analysis.recommend import dispatch_table
from harness.constants import FAILED_STATUSES
from harness.report import write_reports
from harness.store import Plan, RunDir, read_plan


@dataclass
class Finished:
    """A finished run: its planned cases' records, their scaling fits and crossovers, and the
    reports written."""

    records: list[dict]
    fits: list[dict] = field(default_factory=list)
    crossovers: list[dict] = field(default_factory=list)
    reports: list[Path] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """A case the user must look at (mismatch, error, timeout, oom)."""
        return any(r["status"] in FAILED_STATUSES for r in self.records)

    @cached_property
    def answers(self) -> list[dict]:
        """The recommendation for every measured shape (fastest that agreed with float64, its
        margin and whether it is significant): computed when asked for, bootstraps cost."""
        return dispatch_table(self.records)


def finish_run(run_dir: RunDir, plan: Plan | None = None, reports: bool = True) -> Finished:
    """Write scaling.json from the records of the planned cases (`plan`, else the run's
    plan.json; every record without one), then report.html and report.md unless not
    `reports`."""
    plan = plan or read_plan(run_dir.path)
    records = run_dir.records()
    if plan is not None:
        wanted = set(plan.case_ids)
        records = [r for r in records if r["case_id"] in wanted]
    scaling.write_scaling(run_dir.path, records)
    return Finished(records, scaling.fits(records),
                    scaling.crossovers(records, min_ratio=scaling.CROSSOVER_MARGIN),
                    write_reports(run_dir.path) if reports else [])
