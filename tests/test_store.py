"""The run directory survives a killed writer, and loads into pandas with stable columns; it
keeps its own life (started, noted, rewritten), and the plan is built from a request below the
CLI."""
import json
import re
from pathlib import Path

import numpy as np
import pytest

from harness.spec import Case, TimingSettings
from harness.store import (RECORD_FIELDS, NotARunDir, Plan, PlanConflict, Request, RunDir,
                           capture_env, json_safe, load_dataframe, load_env, load_records,
                           make_dir, make_plan, make_record, plan_of_cases, read_plan,
                           require_run_dir, resume_plan, timestamped, write_plan)
from harness.store.plan import filter_cases, parse_filters
from harness.values import BadValue


def record_for(seq_len, status="ok"):
    case = Case(impl="numpy", seq_len=seq_len)
    return make_record(case, {"status": status, "reason": "", "median_s": 0.001 * seq_len,
                              "samples_s": [0.001, 0.002]})


def test_records_have_every_field_and_load_into_pandas(tmp_path):
    run = RunDir(tmp_path)
    run.open_for_append()
    for n in (8, 16):
        run.append(record_for(n))
    run.close()
    frame = load_dataframe(tmp_path)
    assert list(frame.columns) == list(RECORD_FIELDS)
    assert frame["seq_len"].tolist() == [8, 16]
    assert frame.loc[0, "samples_s"] == [0.001, 0.002]
    assert frame["case_id"].is_unique


def test_a_half_written_last_line_is_ignored_then_cut_before_appending(tmp_path):
    run = RunDir(tmp_path)
    run.open_for_append()
    run.append(record_for(8))
    run.close()
    with open(run.results_path, "a") as fh:
        fh.write(json.dumps(record_for(16))[:40])  # the writer was killed mid-line
    assert [r["seq_len"] for r in load_records(tmp_path)] == [8]
    run.open_for_append()
    run.append(record_for(32))
    run.close()
    assert [r["seq_len"] for r in load_records(tmp_path)] == [8, 32]
    assert run.recorded_ids() == {Case(impl="numpy", seq_len=n).case_id for n in (8, 32)}


def test_env_names_versions_cores_threads_and_commit():
    env = capture_env(threads=2, suite_name="smoke")
    assert env["threads"] == 2 and env["suite"] == "smoke"
    assert env["packages"]["numpy"] and env["packages"]["torch"]
    assert env["logical_cores"] >= env["physical_cores"] >= 1
    assert "commit" in env["git"] and env["cpu"]


# -- a run directory's life: started, noted, rewritten; and the plan built from a request --------

def tiny_plan(threads=1, **extra) -> Plan:
    return Plan(suite="tiny", suite_path=None, filters={}, overrides={"threads": threads},
                timing=TimingSettings(), cases=(Case(impl="numpy", seq_len=8),), extra=extra)


def test_a_run_directory_is_started_noted_and_rewritten(tmp_path):
    suite = tmp_path / "tiny.toml"
    suite.write_text("[sweep]\n")
    run = RunDir(tmp_path / "run")
    env = run.start(tiny_plan(), suite_path=suite, resumed_at=None, mem_limit_bytes=2**20)
    assert read_plan(run.path).case_ids == tiny_plan().case_ids
    assert (run.path / "suite.toml").read_text() == "[sweep]\n"
    assert env["threads"] == 1 and env["suite"] == "tiny" and env["mem_limit_bytes"] == 2**20
    assert "resumed_at" not in env  # a None note is no note
    run.note_env(workers={"numpy": {"pid": 1}}, resumed_at=["t1"])
    run.note_env(workers={"torch": {"pid": 2}}, resumed_at=["t2"])
    assert load_env(run.path)["workers"] == {"numpy": {"pid": 1}, "torch": {"pid": 2}}
    assert load_env(run.path)["resumed_at"] == ["t1", "t2"]
    # started again (a resumed run): its env.json is kept and added to
    again = RunDir(run.path).start(tiny_plan(), resumed_at=["t3"])
    assert again["workers"]["torch"] == {"pid": 2} and again["resumed_at"] == ["t1", "t2", "t3"]
    # started with an env of its own (an A/B side): that one replaces it
    assert "workers" not in RunDir(run.path).start(tiny_plan(), env={"suite": "side"})
    run.open_for_append()
    for n in (8, 16):
        run.append(record_for(n))
    run.close()
    run.rewrite([record_for(16, status="error")])
    assert [(r["seq_len"], r["status"]) for r in load_records(run.path)] == [(16, "error")]


def test_run_directory_names_and_the_check_that_a_path_is_one(tmp_path):
    name = timestamped("tiny", tmp_path)
    assert name.parent == tmp_path and re.fullmatch(r"tiny-\d{8}-\d{6}", name.name)
    with pytest.raises(NotARunDir, match="--from: .* is not a run directory") as refused:
        require_run_dir(tmp_path, "--from")
    assert isinstance(refused.value, BadValue)  # the CLI's one line and exit code 2
    with pytest.raises(BadValue, match="--out: cannot create"):
        make_dir(suite_file(tmp_path) / "below")



def test_a_run_directory_is_named_refuses_a_second_run_and_keeps_a_commands_files(tmp_path):
    assert RunDir.named("tiny", tmp_path / "given").path == tmp_path / "given"
    assert re.fullmatch(r"results/tiny-\d{8}-\d{6}", RunDir.named("tiny").path.as_posix())
    run = RunDir(tmp_path / "run")
    run.refuse_if_held()  # nothing there yet: a new run may start
    run.open_for_append()
    run.refuse_if_held()  # an empty results.jsonl holds no run
    run.append(record_for(8))
    run.close()
    with pytest.raises(BadValue, match=r"^--out: .*/run already holds 1 records; pass --resume "
                                       r"to finish that run, or choose another directory$"):
        run.refuse_if_held("pass --resume to finish that run, or ")
    with pytest.raises(BadValue, match=r"already holds 1 records; choose another directory$"):
        run.refuse_if_held()
    folder = run.folder("profile")
    assert folder == run.path / "profile" and folder.is_dir()
    run.save_json("profile/summary.json", {"nan": float("nan")})
    assert json.loads((folder / "summary.json").read_text()) == {"nan": None}
    assert [r["seq_len"] for r in load_records(run.path)] == [8]  # the run's own files untouched
    with pytest.raises(BadValue, match="--out: cannot create"):
        RunDir(suite_file(tmp_path)).folder("profile")


def test_a_plan_of_cases_a_command_built_itself(tmp_path):
    cases = [Case(impl=impl, seq_len=32) for impl in ("numpy", "torch.naive")]
    plan = plan_of_cases("recommend", cases, TimingSettings(budget_s=0.5), recommend={"seq_len": 32})
    assert plan.filters == {"impl": ["numpy", "torch.naive"]} and plan.suite_path is None
    assert plan.overrides["threads"] >= 1 and plan.created_at
    write_plan(tmp_path, plan)
    again = read_plan(tmp_path)
    assert again.case_ids == [c.case_id for c in cases] and again.timing.budget_s == 0.5
    assert again.extra == {"recommend": {"seq_len": 32}} and again.suite == "recommend"


def suite_file(tmp_path):
    path = tmp_path / "a-file"
    path.write_text("x")
    return path


def test_json_safe_is_strict_json():
    value = {"nan": float("nan"), "inf": float("-inf"), "pair": (1, np.float32(2.5)),
             "path": Path("a/b"), 3: np.int64(4), "ok": [True, None, "x"]}
    assert json_safe(value) == {"nan": None, "inf": None, "pair": [1, 2.5], "path": "a/b",
                                "3": 4, "ok": [True, None, "x"]}
    json.dumps(json_safe(value), allow_nan=False)


def test_filters_are_checked_and_applied_below_the_cli():
    known = {"numpy": "kernel", "torch.naive": "kernel"}
    filters = parse_filters({"impl": ["torch.*"], "seq_len": ["8,16"], "causal": ["false"],
                             "dtype": None}, known)
    assert filters == {"impl": ["torch.*"], "seq_len": [8, 16], "causal": [False]}
    cases = [Case(impl=i, seq_len=n) for i in known for n in (8, 32)]
    assert filter_cases(cases, filters) == [Case(impl="torch.naive", seq_len=8)]
    for given, words in (({"impl": ["jax*"]}, "--impl: no implementation matches 'jax\\*'"),
                         ({"dtype": ["fp8"]}, "--dtype: unknown dtype 'fp8'"),
                         ({"mode": ["bwd"]}, "--mode: unknown mode 'bwd'"),
                         ({"seq_len": ["0"]}, "--seq-len: expected a positive integer")):
        with pytest.raises(BadValue, match=words):
            parse_filters(given, known)
    with pytest.raises(BadValue, match="the filters leave no case"):
        filter_cases(cases, {"seq_len": [64]})


def test_a_resumed_run_keeps_its_plan_or_is_refused(tmp_path):
    from harness import registry

    adapters = registry.adapters()
    narrow = Request(suite="smoke", filters={"impl": ["numpy"], "seq_len": ["32"]})
    _, plan = make_plan(narrow, adapters)
    assert plan.filters == {"impl": ["numpy"], "seq_len": [32]} and plan.overrides["threads"] >= 1
    write_plan(tmp_path, plan)
    as_planned = resume_plan(tmp_path, make_plan(Request(suite="smoke"), adapters)[1],
                             Request(suite="smoke"))
    assert as_planned.case_ids == plan.case_ids  # no filters: the run as it was planned
    wider = Request(suite="smoke", filters={"impl": ["numpy"]})
    with pytest.raises(PlanConflict, match="planned for another run .*filters"):
        resume_plan(tmp_path, make_plan(wider, adapters)[1], wider)
    longer = Request(suite="smoke", filters=narrow.filters, timing={"budget_s": 9.0})
    with pytest.raises(PlanConflict, match="budget_s .* vs 9.0"):
        resume_plan(tmp_path, make_plan(longer, adapters)[1], longer)
