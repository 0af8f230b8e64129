"""A record: one JSON object per case, with every RECORD_FIELDS key (None where a case did not
get that far), so DataFrames from different runs have the same columns. The fields are declared
in harness.store.schema; a key declared nowhere is an error when a record is made, and kept
(after the declared ones) when an older or newer record is loaded."""
from __future__ import annotations

from datetime import datetime, timezone

from harness.store.schema import RECORD_FIELDS, SCHEMA_VERSION, undeclared

__all__ = ["RECORD_FIELDS", "SCHEMA_VERSION", "complete", "make_record", "now_iso"]


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def make_record(case, result: dict, **extra) -> dict:
    """A complete record: every RECORD_FIELDS key, the case's fields, then what was measured.

    ValueError for a key that no part of harness.store.schema declares: a field is added
    there, or it would be written to some records and read by no one."""
    unknown = undeclared([*result, *extra])
    if unknown:
        raise ValueError(f"record key {unknown[0]!r} is not declared in harness.store.schema "
                         f"(undeclared: {', '.join(unknown)}); declare it in one of its parts")
    record = dict.fromkeys(RECORD_FIELDS)
    record.update(schema_version=SCHEMA_VERSION, case_id=case.case_id, **case.to_dict())
    record.update(result)
    record.update(extra)
    return record


def complete(record: dict) -> dict:
    """A loaded record with every RECORD_FIELDS key, in schema order: a field an older run
    lacks is None; a key the schema does not declare (a newer run, a hand-edited file) is
    kept, after the declared ones."""
    return {**dict.fromkeys(RECORD_FIELDS), **record}
