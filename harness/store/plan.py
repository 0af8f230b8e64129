"""plan.json: what a run set out to measure, written before its first case; and the plan built
from what a command asked (`Request`): the suite, the filters that narrow it, the settings the
command line changes, the cases.

The plan is data: the suite, the filters and overrides that narrowed it, the timing settings and
every planned case. Report (complete or not, which cases are missing), resume (which cases are
left, and whether the request still matches) and compare (which cases a run meant to have) read
it; nothing re-parses a command line. A filter or a request the user got wrong is one line
(SuiteError, PlanConflict: both BadValue).
"""
from __future__ import annotations

import dataclasses
import fnmatch
import json
from dataclasses import dataclass, field
from pathlib import Path

from harness import values
from harness.constants import DTYPES, MODES
from harness.spec import Case, Suite, SuiteError, TimingSettings, load_suite, timing_settings
from harness.store.env import physical_cores
from harness.store.records import now_iso
from harness.store.rundir import PLAN, DamagedFile, write_json

PLAN_VERSION = 1
FILTER_KEYS = ("impl", "seq_len", "dtype", "device", "causal", "mode")  # --impl, --seq-len, ...


class PlanError(DamagedFile):
    """A plan.json that cannot be read; str() is one line naming the file."""


class PlanConflict(values.BadValue):
    """A resumed run asked for with another suite, filters or settings than it was planned
    with; str() is one line."""


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
    return write_json(Path(run_dir) / PLAN, plan.to_dict())


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


# ---- filters: the options that narrow a suite, as the user typed them ---------------------

def split_values(given: list[str] | None) -> list[str]:
    """Repeated options and comma lists alike: ["a,b", "c"] -> ["a", "b", "c"]."""
    return [v.strip() for group in given or [] for v in group.split(",") if v.strip()]


def matches(name: str, patterns: list[str]) -> bool:
    """Whether an implementation name matches one of the (glob) patterns."""
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def impl_patterns(given: list[str] | None, known, where: str = "--impl") -> list[str]:
    """The implementation patterns given (globs, comma lists); SuiteError for one that matches
    no implementation in `known`."""
    patterns = split_values(given)
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in known):
            raise SuiteError(f"{where}: no implementation matches {pattern!r}: expected one of "
                             f"{', '.join(sorted(known))}")
    return patterns


def _named(where: str, what: str, given: list[str] | None, allowed: tuple[str, ...]) -> list[str]:
    found = split_values(given)
    for value in found:
        if value not in allowed:
            raise SuiteError(f"{where}: unknown {what} {value!r}: expected one of "
                             f"{', '.join(allowed)}")
    return found


def _checked(where: str, kind: values.Kind, given: list[str] | None) -> list:
    """Each value by the rule its suite key obeys (BadValue naming the option)."""
    return [kind.from_text(v, where) for v in split_values(given)]


def parse_filters(given: dict, known_impls) -> dict[str, list]:
    """The filter options (FILTER_KEYS -> the texts given) as validated data, as the plan
    records them; a filter not given is absent."""
    found = {"impl": impl_patterns(given.get("impl"), known_impls),
             "seq_len": _checked("--seq-len", values.DIMENSION, given.get("seq_len")),
             "dtype": _named("--dtype", "dtype", given.get("dtype"), DTYPES),
             "device": _checked("--device", values.DEVICE, given.get("device")),
             "causal": _checked("--causal", values.BOOL, given.get("causal")),
             "mode": _named("--mode", "mode", given.get("mode"), MODES)}
    return {k: v for k, v in found.items() if v}


def filter_cases(cases: list[Case], filters: dict[str, list]) -> list[Case]:
    """The cases the filters keep; SuiteError when they keep none."""
    def keep(c: Case) -> bool:
        return all(matches(c.impl, kept) if key == "impl" else getattr(c, key) in kept
                   for key, kept in filters.items())

    kept = [c for c in cases if keep(c)]
    if not kept:
        raise SuiteError("the filters leave no case of the suite to run (suite has seq_len "
                         f"{sorted({c.seq_len for c in cases})}, dtype "
                         f"{sorted({c.dtype for c in cases})}, device "
                         f"{sorted({c.device for c in cases})})")
    return kept


# ---- the plan a command asks for -----------------------------------------------------------

@dataclass(frozen=True)
class Request:
    """What a command asks to run, as it asks it."""

    suite: str | None = None  # a suite file or a built-in name; None: the default suite
    filters: dict = field(default_factory=dict)  # FILTER_KEYS -> the option's texts, as given
    timing: dict = field(default_factory=dict)  # TimingSettings fields it sets, values checked
    threads: int | None = None  # None: this machine's physical cores
    mem_limit: int | None = None  # bytes one case may allocate; None: no cap

    def explicit(self) -> dict:
        """The settings the request sets itself (not the suite's, not the defaults), named as
        the plan's overrides name them."""
        given = dict(self.timing)
        if self.threads:
            given["threads"] = self.threads
        if self.mem_limit is not None:
            given["mem_limit_bytes"] = self.mem_limit
        return given


def select(request: Request, adapters: dict) -> tuple[Suite, dict, list[Case]]:
    """The request's suite (checked), its filters as data, and the cases they keep.
    `adapters` maps each registered implementation's name to its adapter (level, framework)."""
    known = {name: adapter.level for name, adapter in adapters.items()}
    suite = load_suite(request.suite, known)
    filters = parse_filters(request.filters, known)
    return suite, filters, filter_cases(suite.cases(), filters)


def make_plan(request: Request, adapters: dict) -> tuple[Suite, Plan]:
    """The run a request asks for, as data: suite, filters, overrides, settings, cases."""
    suite, filters, cases = select(request, adapters)
    timing = timing_settings(request.timing, suite.timing)
    if timing.cuda_graphs:
        _check_graphs(cases, adapters, "--cuda-graphs" if request.timing.get("cuda_graphs")
                      else f"{suite.path}: key 'timing.cuda_graphs'")
    overrides = {**request.timing, "threads": request.threads or physical_cores(),
                 **({"mem_limit_bytes": request.mem_limit} if request.mem_limit else {})}
    return suite, Plan(suite=suite.name, suite_path=str(suite.path) if suite.path else None,
                       filters=filters, overrides=overrides, timing=timing, cases=tuple(cases),
                       created_at=now_iso(), extra={"suite_arg": request.suite or suite.name})


def plan_of_cases(name: str, cases: list[Case], timing: TimingSettings, **extra) -> Plan:
    """The plan of cases a command builds itself, with no suite file (recommend's one problem
    on each implementation): named `name`, filtered to the cases' implementations, on this
    machine's physical cores; `extra` is kept in plan.json beside them."""
    return Plan(suite=name, suite_path=None,
                filters={"impl": list(dict.fromkeys(c.impl for c in cases))},
                overrides={"threads": physical_cores()}, timing=timing, cases=tuple(cases),
                created_at=now_iso(), extra=extra)


def _check_graphs(cases: list[Case], adapters: dict, where: str) -> None:
    """CUDA-graph replay is for torch on CUDA: any other planned case is refused up front."""
    from harness.measure.clocks import graph_refusal

    refused = [why for why in (graph_refusal(c, adapters[c.impl].framework) for c in cases) if why]
    if refused:
        raise SuiteError(f"{where}: {len(refused)} of {len(cases)} planned cases cannot be "
                         f"replayed as CUDA graphs ({refused[0]}); keep to torch "
                         "implementations on CUDA, e.g. --device cuda --impl 'torch.*'")


def resume_plan(run_dir: str | Path, plan: Plan, request: Request) -> Plan:
    """The plan a resumed run keeps: its own. Another suite, filters or settings than the ones
    it was planned with make another run (PlanConflict); none given mean "the run as it was
    planned"."""
    try:
        earlier = read_plan(run_dir)
    except PlanError as exc:
        raise PlanConflict(f"--resume: {exc}") from None
    if earlier is None:
        return plan
    if not plan.filters:
        planned_ids = set(earlier.case_ids)
        plan = dataclasses.replace(plan, filters=earlier.filters,
                                   cases=tuple(c for c in plan.cases if c.case_id in planned_ids))
    differs = earlier.differences(plan)
    planned = {**dataclasses.asdict(earlier.timing), **earlier.overrides}
    differs += [f"{key} {planned.get(key)!r} vs {value!r}"
                for key, value in request.explicit().items() if planned.get(key) != value]
    if differs:
        raise PlanConflict(f"--resume: {run_dir} was planned for another run ("
                           f"{'; '.join(differs)}); resume it with the same suite, filters and "
                           "settings (or none), or choose another --out")
    return earlier
