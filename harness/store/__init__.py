"""What a run leaves on disk, and how to read it back (pandas included):

    from harness.store import load_dataframe
    frame = load_dataframe("results/default-20261201-120000")
"""
from harness.store.env import capture_env, fingerprint, physical_cores
from harness.store.plan import (Plan, PlanConflict, PlanError, Request, make_plan, plan_of_cases,
                                 read_plan, resume_plan, write_plan)
from harness.store.records import complete, make_record, now_iso
from harness.store.rundir import (DamagedFile, DamagedLineWarning, NotARunDir, RunDir, json_safe,
                                  load_dataframe, load_env, load_records, make_dir,
                                  require_run_dir, timestamped, write_json)
from harness.store.schema import RECORD_FIELDS, SCHEMA_VERSION

__all__ = ["DamagedFile", "DamagedLineWarning", "Plan", "PlanError", "RECORD_FIELDS", "RunDir",
           "SCHEMA_VERSION", "capture_env", "complete", "fingerprint", "load_dataframe", "load_env",
           "load_records", "make_record", "now_iso", "physical_cores", "read_plan", "write_plan",
           "NotARunDir", "PlanConflict", "Request", "json_safe", "make_dir", "make_plan",
           "plan_of_cases", "require_run_dir", "resume_plan", "timestamped", "write_json"]
