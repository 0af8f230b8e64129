"""What a run leaves on disk, and how to read it back (pandas included):

    from harness.store import load_dataframe
    frame = load_dataframe("results/default-20261201-120000")
"""
from harness.store.env import capture_env, fingerprint, physical_cores
from harness.store.plan import Plan, PlanError, read_plan, write_plan
from harness.store.records import RECORD_FIELDS, SCHEMA_VERSION, make_record, now_iso
from harness.store.rundir import (DamagedFile, DamagedLineWarning, RunDir, load_dataframe,
                                  load_env, load_records)

__all__ = ["DamagedFile", "DamagedLineWarning", "Plan", "PlanError", "RECORD_FIELDS", "RunDir",
           "SCHEMA_VERSION", "capture_env", "fingerprint", "load_dataframe", "load_env", "load_records", "make_record", "now_iso",
           "physical_cores", "read_plan", "write_plan"]
