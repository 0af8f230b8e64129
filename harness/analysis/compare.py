"""The regression gate: two runs, matched case by case, judged from the raw samples.

For every case both runs timed, one of three rules (each row's `rule` says which):

- `repeats` (both records measured in R >= 2 processes, `repeat_medians_s`): the ratio of the
  geometric means of the repeat medians, with Welch's t on their logs (each side's standard
  error as in `harness.measure.repeats`). `regression` when p(slower) < 0.001 by that test and
  the 95% interval lies above 1 + threshold; `improvement` the mirror. The repeats carry the
  process-to-process variance; the strict p guards against slower phases of the machine that
  last minutes and so reach every repeat of one run (measured: 2 of 720 A/A comparisons on a
  2-core VM had 95% intervals above 1.05; none passed p < 0.001).
- `single run` (either side measured in one process): from `samples_s`, the ratio of medians
  with a 95% percentile-bootstrap interval (2000 seeded resamples) and one-sided Mann-Whitney U
  p-values. Samples of one process say nothing of the next process's mood: two such runs of the
  same code differ by far more than their intervals (SINGLE_RUN_MIN_EFFECT says how much). So
  on a host timer a regression needs p(slower) < 0.001 and the interval's lower bound above
  1 + max(threshold, SINGLE_RUN_MIN_EFFECT), i.e. 3x: only a collapse is caught. `improvement`
  is the mirror. Use repeats (`--repeats 3`, as the CI suites do) to see less.
- `interleaved` (`attnbench ab`: both sides in one job, taking turns): the single-run test with
  the plain threshold, since drift lands on both sides alike.

Every rule also needs the change to exceed what the clocks can resolve for that case: each
run's measured resolution (harness.measure.resolution, kept in env.json with the peaks) over
the case's block size, the coarser side's; runs recorded without it are judged on their
samples alone. Otherwise `unchanged` when the ratio's interval lies within
[1/(1 + threshold), 1 + threshold] and both sides' own median CIs are within ±threshold, else
`noisy`: neither a change nor its absence is shown, or the change is too small to resolve.
Every timed verdict has a `note` naming its rule and the figures that decided it.

Each timed row carries `min_detectable_ratio`: the smallest slowdown the rule would have called
with POWER (80%) probability, from the standard error it measured (Student's t for repeats, the
bootstrap interval's width otherwise), the threshold or run-to-run allowance, and the
resolution. `detectable` sums them up, and the gate's text says plainly when a comparison could
not have seen a slowdown of twice the threshold. A case either run marked unstable
(`stable: false`: timed under contention, or implausible) is `noisy` whatever its ratio: it is
never called a regression or an improvement.
Status changes have verdicts of their own: `new_failure` (ok or unsupported before; mismatch,
error, timeout or oom now; also a case new to the run that fails), `fixed`, `still_failing`,
`now_unsupported`, `now_supported`, `unsupported`, and `new` / `missing` for unmatched cases.
Peak memory that grew by more than the memory threshold and 1 MiB is `memory_growth`.
The gate fails (exit 1) on a regression, a new failure or a memory growth, and when the new run
is incomplete: cases its plan names have no record (an interrupted run), so the gate could not
judge what it was meant to.

Runs from machines or software that differ (`store.fingerprint`) are refused unless forced.

This module judges; `harness.report.gate` writes the verdicts as text (console, Markdown).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from harness.analysis.judge import (
    ALPHA,
    CONFIDENCE,
    DEFAULT_THRESHOLD,
    POWER,
    judge_repeats,
    judge_samples,
)
from harness.case import config_dict, value_of
from harness.constants import FAILED_STATUSES
from harness.measure.resolution import per_call
from harness.store import (
    PlanError,
    fingerprint,
    load_env,
    load_records,
    read_plan,
    require_run_dir,
)
from harness.store.env import differences
from harness.units import MIB

DEFAULT_MEM_THRESHOLD = 0.10
SEEN_AT = 2  # `detectable` counts the cases that could have shown twice the threshold
# Host-timer cases compared across two single-process runs: the smallest change that counts, as
# new/base - 1. Ten A/A pairs of smoke runs (the same code, minutes apart, on a 2-core VM) gave
# ratios up to 3.05 (interval from 2.59) on sub-millisecond cases that looked stable.
SINGLE_RUN_MIN_EFFECT = 2.0
RULES = ("repeats", "single run", "interleaved")
MEM_FLOOR_BYTES = MIB  # memory growth below this is noise, whatever its ratio

TIMED = ("regression", "improvement", "unchanged", "noisy")
FAILING = ("regression", "new_failure")
VERDICT_ORDER = ("new_failure", "regression", "noisy", "improvement", "fixed", "still_failing",
                 "now_unsupported", "now_supported", "new", "missing", "other_machine",
                 "unchanged", "unsupported")


class CompareError(ValueError):
    """Input the gate cannot judge (not a run, runs not comparable); str() is one line."""


def _repeated(record: dict) -> bool:
    return len(record.get("repeat_medians_s") or []) >= 2


def _status_verdict(base: str | None, new: str | None) -> str | None:
    """The verdict a status change decides on its own; None when both runs timed the case."""
    if new is None:
        return "missing"
    if base is None:
        return "new_failure" if new in FAILED_STATUSES else "new"
    if new in FAILED_STATUSES:
        return "still_failing" if base in FAILED_STATUSES else "new_failure"
    if base in FAILED_STATUSES:
        return "fixed"
    if base == "ok" and new == "unsupported":
        return "now_unsupported"
    if base == "unsupported" and new == "ok":
        return "now_supported"
    if base == new == "unsupported":
        return "unsupported"
    return None


def _memory(base: dict, new: dict, mem_threshold: float) -> dict:
    mb, mn = base.get("peak_mem_bytes"), new.get("peak_mem_bytes")
    if not mb or mn is None or base.get("status") != "ok" or new.get("status") != "ok":
        return {"base_mem_bytes": mb, "new_mem_bytes": mn, "mem_ratio": None, "mem_verdict": None}
    ratio = mn / mb
    grew = ratio > 1 + mem_threshold and mn - mb > MEM_FLOOR_BYTES
    return {"base_mem_bytes": mb, "new_mem_bytes": mn, "mem_ratio": ratio,
            "mem_verdict": "memory_growth" if grew else None}


def problem_fields(record: dict) -> dict:
    """What a comparison row says of its problem: the case id, the implementation, the
    configuration (harness.case) and the lengths."""
    return {"case_id": record["case_id"], "impl": record.get("impl"), **config_dict(record),
            "seq_len": record.get("seq_len"), "seq_len_kv": value_of(record, "seq_len_kv"),
            "seed": record.get("seed")}


def judge_case(base: dict | None, new: dict | None, threshold: float = DEFAULT_THRESHOLD,
               mem_threshold: float = DEFAULT_MEM_THRESHOLD, interleaved: bool = False,
               peaks: tuple[dict | None, dict | None] = (None, None)) -> dict:
    """One row of the comparison: the case, both statuses, the verdict and its evidence, and
    the rule that judged it (see the module docstring). `peaks`: each run's env.json `peaks`,
    where the clocks' measured resolutions are."""
    row = {**problem_fields(new or base),
           "base_status": base and base.get("status"), "new_status": new and new.get("status"),
           "reason": (new or {}).get("reason") or ""}
    verdict = _status_verdict(row["base_status"], row["new_status"])
    if verdict is None:
        floor_s = case_resolution((base, new), peaks)
        row.update(_judge_times(base, new, threshold, floor_s, interleaved))
        row.update(_memory(base, new, mem_threshold))
    else:
        row["verdict"] = verdict
    row["failing"] = row["verdict"] in FAILING or row.get("mem_verdict") == "memory_growth"
    return row


def case_resolution(records: tuple[dict, dict], peaks: tuple[dict | None, dict | None]
                    ) -> float | None:
    """The coarser of the two sides' clock resolutions per call (their clock's over their
    block size: harness.measure.resolution); None where neither run measured it."""
    values = [per_call(((side_peaks or {}).get(r.get("device")) or {}).get("timer_resolution_s"),
                       r.get("timer"), r.get("calls_per_sample"))
              for r, side_peaks in zip(records, peaks)]
    known = [v for v in values if v is not None]
    return max(known) if known else None


def single_run_min_effect(device: str | None) -> float:
    """The run-to-run allowance of the `single run` rule: host timers only (see the docstring)."""
    return 0.0 if (device or "").startswith("cuda") else SINGLE_RUN_MIN_EFFECT


def _judge_times(base: dict, new: dict, threshold: float, floor_s: float | None,
                 interleaved: bool) -> dict:
    bs, ns = base.get("samples_s") or [], new.get("samples_s") or []
    if not interleaved and _repeated(base) and _repeated(new):
        row = {"rule": "repeats", **judge_repeats(base, new, threshold, floor_s)}
    elif bs and ns:
        rule = "interleaved" if interleaved else "single run"
        effect = 0.0 if interleaved else single_run_min_effect(new.get("device"))
        row = {"rule": rule, **judge_samples(bs, ns, threshold, floor_s, effect, rule)}
    else:
        return {"rule": None, "verdict": "noisy", "note": "no raw samples to judge",
                "reason": "no raw samples to judge"}
    unstable = [(side, r.get("instability") or "measured under contention")
                for side, r in (("base", base), ("new", new)) if r.get("stable") is False]
    if unstable:
        row["verdict"] = "noisy"
        row["note"] = "; ".join(f"unstable in the {side} run: {why}" for side, why in unstable)
    return row


def detectable(rows: list[dict], threshold: float) -> dict:
    """How much the comparison could see. A slowdown of exactly the threshold is by design
    almost never called (the interval must clear it), so the yardstick is `target`, SEEN_AT times
    the threshold: how many timed cases could have shown it (min_detectable_ratio within it),
    and for the rest the smallest slowdown any of them could have shown (None when every case
    could)."""
    target = 1 + SEEN_AT * threshold
    timed = [r for r in rows if r.get("min_detectable_ratio") is not None]
    blind = [r["min_detectable_ratio"] for r in timed if r["min_detectable_ratio"] > target]
    return {"target_ratio": target, "cases": len(timed), "at_target": len(timed) - len(blind),
            "blind": len(blind), "blind_above": min(blind) if blind else None}


def geomean_groups(rows: list[dict]) -> list[dict]:
    """Geometric-mean ratio per (implementation, dtype) over the cases both runs timed and
    that could be judged (a `noisy` case's ratio is counted, not averaged)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if row["verdict"] in TIMED and row.get("ratio"):
            groups.setdefault((row["impl"], row["dtype"]), []).append(row)
    out = []
    for (impl, dtype), members in sorted(groups.items()):
        judged = [r["ratio"] for r in members if r["verdict"] != "noisy"]
        out.append({"impl": impl, "dtype": dtype, "cases": len(judged),
                    "noisy": len(members) - len(judged),
                    "geomean_ratio": float(np.exp(np.log(judged).mean())) if judged else None,
                    "regressions": sum(r["verdict"] == "regression" for r in members),
                    "improvements": sum(r["verdict"] == "improvement" for r in members)})
    return out


def other_machine_row(base: dict, new: dict, why: str) -> dict:
    """A case both runs have, measured on machines whose fingerprints differ: not judged."""
    return {**problem_fields(new), "base_status": base.get("status"),
            "new_status": new.get("status"), "verdict": "other_machine", "failing": False,
            "reason": f"measured on machines that differ: {why}"}


def compare_records(base: list[dict], new: list[dict], threshold: float = DEFAULT_THRESHOLD,
                    mem_threshold: float = DEFAULT_MEM_THRESHOLD,
                    interleaved: bool = False, apart: dict[str, str] | None = None,
                    peaks: tuple[dict | None, dict | None] = (None, None)) -> dict:
    """Every case of either run judged; the counts; the groups; pass or fail. `apart`: case
    ids both runs measured on machines that differ (-> why), left unjudged (`other_machine`).
    `peaks`: each run's env.json `peaks` (the clocks' resolutions)."""
    by_base = {r["case_id"]: r for r in base}  # a later record of a case wins
    by_new = {r["case_id"]: r for r in new}
    ids = list(dict.fromkeys([*by_base, *by_new]))
    apart = apart or {}
    rows = [other_machine_row(by_base[i], by_new[i], apart[i]) if i in apart else
            judge_case(by_base.get(i), by_new.get(i), threshold, mem_threshold, interleaved, peaks)
            for i in ids]
    counts = {v: sum(r["verdict"] == v for r in rows) for v in VERDICT_ORDER}
    counts["memory_growth"] = sum(r.get("mem_verdict") == "memory_growth" for r in rows)
    failing = any(r["failing"] for r in rows)
    return {"verdict": "fail" if failing else "pass", "threshold": threshold,
            "mem_threshold": mem_threshold, "alpha": ALPHA, "confidence": CONFIDENCE,
            "power": POWER, "detectable": detectable(rows, threshold),
            "matched": sum(1 for i in ids if i in by_base and i in by_new and i not in apart),
            "single_run_min_effect": SINGLE_RUN_MIN_EFFECT,
            "rules": {rule: sum(r.get("rule") == rule for r in rows) for rule in RULES},
            "counts": counts, "groups": geomean_groups(rows), "cases": rows}


# ---- runs ---------------------------------------------------------------------------------

def read_run(path: str | Path) -> tuple[list[dict], dict]:
    """A run directory's records and env, or CompareError saying what is wrong with it
    (NotARunDir when it is none)."""
    path = require_run_dir(path)
    try:
        records = load_records(path)
        env = load_env(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CompareError(f"{path}: unreadable run ({exc})") from None
    if not records:
        raise CompareError(f"{path}/results.jsonl: no records")
    if any("case_id" not in r or "status" not in r for r in records):
        raise CompareError(f"{path}/results.jsonl: records without case_id or status: not an "
                           "attnbench run")
    return records, env


def fingerprint_differences(base_env: dict, new_env: dict) -> list[tuple[str, object, object]]:
    """(field, base value, new value) for every fingerprint field that differs."""
    return differences(fingerprint(base_env), fingerprint(new_env))


def record_fingerprints(records: list[dict], env: dict) -> dict[str, dict]:
    """case_id -> the fingerprint of the machine that measured it: its host's (env.json
    `hosts`, for runs spread over several machines), else the run's."""
    hosts = env.get("hosts") or {}
    run = fingerprint(env)
    by_host = {name: fingerprint(entry) for name, entry in hosts.items()
               if isinstance(entry, dict) and entry.get("cpu")}
    return {r["case_id"]: by_host.get(r.get("host"), run) for r in records}


def describe_differences(diffs) -> str:
    return "; ".join(f"{k} {a!r} vs {b!r}" for k, a, b in diffs)


def unrecorded(run_dir, records: list[dict]) -> list[str] | None:
    """Planned case ids of a run that have no record (an interrupted run); None without a plan."""
    try:
        plan = read_plan(run_dir)
    except PlanError:
        return None
    if plan is None:
        return None
    recorded = {r["case_id"] for r in records}
    return [i for i in plan.case_ids if i not in recorded]


def compare_runs(base_dir, new_dir, threshold: float = DEFAULT_THRESHOLD,
                 mem_threshold: float = DEFAULT_MEM_THRESHOLD, force: bool = False,
                 check_fingerprint: bool = True) -> dict:
    """Compare two run directories case by case, matching a case only where both runs measured
    it on machines with the same fingerprint (each record's host's, else the run's); refuse
    runs that have no such case unless `force` (which matches across machines)."""
    base, base_env = read_run(base_dir)
    new, new_env = read_run(new_dir)
    base_ids = {r["case_id"] for r in base}
    if not any(r["case_id"] in base_ids for r in new):
        raise CompareError(f"{base_dir} and {new_dir} have no case in common")
    base_fp, new_fp = record_fingerprints(base, base_env), record_fingerprints(new, new_env)
    across = {i: differences(base_fp[i], new_fp[i]) for i in base_fp
              if i in new_fp and base_fp[i] != new_fp[i]}
    diffs = next(iter(across.values()), [])
    if across and check_fingerprint and not force and len(across) == len(base_ids & set(new_fp)):
        raise CompareError(f"runs are not comparable: {describe_differences(diffs)} (base vs "
                           "new); pass --force to compare anyway")
    apart = {} if force or not check_fingerprint else \
        {i: describe_differences(d) for i, d in across.items()}
    result = compare_records(base, new, threshold, mem_threshold, apart=apart,
                             peaks=(base_env.get("peaks"), new_env.get("peaks")))
    result.update(base=str(base_dir), new=str(new_dir), differences=[list(d) for d in diffs],
                  forced=bool(diffs and force), base_fingerprint=fingerprint(base_env),
                  new_fingerprint=fingerprint(new_env),
                  unrecorded={"base": unrecorded(base_dir, base), "new": unrecorded(new_dir, new)})
    if result["unrecorded"]["new"]:  # what was meant to be checked was not: never a pass
        result["verdict"] = "fail"
    return result


def exit_code(result: dict) -> int:
    return 1 if result["verdict"] == "fail" else 0
