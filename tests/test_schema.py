"""The record schema: every key a run writes is declared once (harness.store.schema), a record
has every declared field, an undeclared key is an error when a record is made, and loading
keeps what older and newer runs recorded. The field list of docs/records.md is the schema's."""
import dataclasses
import json
import re
from pathlib import Path

import pytest

from harness import registry
from harness.measure import repeats
from harness.measure.timer import Samples
from harness.run.execute import execute
from harness.run.record import case_record
from harness.run.runner import Runner
from harness.spec import Case, TimingSettings
from harness.store import RECORD_FIELDS, RunDir, complete, load_dataframe, load_records, make_record
from harness.store import schema

RECORDS_PAGE = Path(__file__).resolve().parent.parent / "docs" / "records.md"
FAST = TimingSettings(budget_s=0.05, warmup_s=0.01, min_samples=3)
CASE = Case(impl="numpy", heads=2, seq_len=16, head_dim=8)


def real_record(case=CASE) -> dict:
    result = execute(case, registry.get(case.impl), FAST)
    return case_record(case, result, threads=1, worker="numpy", started_at="2026-01-01T00:00:00",
                       wall_s=0.1)


def test_record_fields_are_the_parts_in_order_once_each():
    from_parts = [f.name for part in schema.PARTS for f in dataclasses.fields(part)]
    assert list(RECORD_FIELDS) == from_parts
    assert len(set(RECORD_FIELDS)) == len(RECORD_FIELDS), "a field is declared in two parts"
    # the case's fields are Case's own: a new Case field is a record field
    case_fields = tuple(f.name for f in dataclasses.fields(Case))
    assert schema.CASE_FIELDS == case_fields
    start = RECORD_FIELDS.index("case_id") + 1
    assert RECORD_FIELDS[start:start + len(case_fields)] == case_fields


def test_every_part_is_typed_and_defaults_to_null():
    for part in schema.PARTS:
        if part is Case:
            continue
        assert dataclasses.asdict(part()) == dict.fromkeys(schema.names(part)), part.__name__
        assert all(f.type for f in dataclasses.fields(part)), part.__name__


def test_every_key_of_a_real_record_is_declared_and_every_field_is_there():
    record = real_record()
    assert record["status"] == "ok", record["reason"]
    assert schema.undeclared(record) == []
    assert list(record) == list(RECORD_FIELDS)  # every field, in column order
    assert record["median_s"] > 0 and record["flops"] > 0 and record["tolerance"] > 0


def test_a_failed_case_has_every_field_with_nulls_where_it_stopped():
    case = Case(impl="numpy", heads=2, seq_len=16, head_dim=8, device="cuda")
    record = real_record(case)
    assert record["status"] == "unsupported"
    assert list(record) == list(RECORD_FIELDS)
    assert record["median_s"] is None and record["samples_s"] is None


def test_the_timer_fills_the_timing_part_and_declares_every_key():
    assert Samples.TIMING == schema.TIMING_FIELDS  # the timer's names are the schema's
    record = Samples((1e-3, 2e-3, 3e-3, 4e-3), contention={"cpu_pressure": 0.0}).to_record()
    assert set(record) == {*schema.TIMING_FIELDS, "contention", "stable", "instability"}
    assert schema.undeclared(record) == []


def test_combined_and_split_repeats_declare_every_key():
    one = {**Samples((1e-3, 1.1e-3, 0.9e-3, 1e-3), contention={"cpu_pressure": 0.0}).to_record(),
           "peak_mem_bytes": 10, "harness_s": {"prepare": 0.1}}
    two = {**Samples((2e-3, 2.1e-3, 1.9e-3, 2e-3)).to_record(), "peak_mem_bytes": 12,
           "harness_s": {"prepare": 0.2}}
    for results in ([one], [one, two]):
        merged = repeats.combine(results, target_ci=0.02)
        assert schema.undeclared(merged) == []
        assert set(schema.TIMING_FIELDS) <= set(merged)
    record = make_record(CASE, {"status": "ok", **repeats.combine([one, two], target_ci=0.02)})
    for part in repeats.split(record):
        assert schema.undeclared(part) == []


def test_a_runs_records_declare_every_key(tmp_path):
    # the runner's own path: worker processes, two repeats, where it ran
    run_dir = RunDir(tmp_path / "run")
    settings = dataclasses.replace(FAST, repeats=2)
    Runner(run_dir, settings, threads=1).run([CASE])
    (record,) = load_records(run_dir.path)
    assert record["status"] == "ok", record["reason"]
    assert len(record["repeat_medians_s"]) == 2
    assert schema.undeclared(record) == []
    assert set(record) == set(RECORD_FIELDS)


@pytest.mark.parametrize("where", ["result", "extra"])
def test_an_undeclared_key_is_an_error_naming_it(where):
    result, extra = {"status": "ok"}, {}
    (result if where == "result" else extra)["bytes_movd"] = 1
    with pytest.raises(ValueError, match="'bytes_movd'.*harness.store.schema"):
        make_record(CASE, result, **extra)


def test_make_record_has_every_declared_field():
    record = make_record(CASE, {"status": "unsupported", "reason": "no"})
    assert list(record) == list(RECORD_FIELDS)
    assert record["schema_version"] == schema.SCHEMA_VERSION
    assert record["seq_len"] == 16 and record["case_id"] == CASE.case_id


def write_lines(path: Path, records: list[dict]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def older_record(seq_len: int) -> dict:
    """A record as a first release wrote it: the case, the outcome, a few timing figures."""
    case = Case(impl="numpy", seq_len=seq_len)
    fields = ("impl", "level", "mode", "device", "dtype", "batch", "heads", "seq_len",
              "seq_len_kv", "head_dim", "causal", "seed")
    return {"schema_version": 1, "case_id": case.case_id,
            **{k: getattr(case, k) for k in fields},
            "status": "ok", "reason": "", "median_s": 1e-3, "n_samples": 5}


def test_an_older_record_loads_with_nulls(tmp_path):
    run = write_lines(tmp_path / "old", [older_record(8), older_record(16)])
    frame = load_dataframe(run)
    assert list(frame.columns) == list(RECORD_FIELDS)
    assert frame["median_s"].tolist() == [1e-3, 1e-3]
    assert frame["padding"].isna().all() and frame["harness_s"].isna().all()
    completed = complete(older_record(8))
    assert list(completed) == list(RECORD_FIELDS)
    assert completed["compile_s"] is None and completed["median_s"] == 1e-3


def test_an_unknown_key_survives_loading_after_the_declared_columns(tmp_path):
    newer = {**older_record(16), "joules_per_call": 4096}
    hand_edited = {**older_record(32), "note": "rerun after the driver update"}
    run = write_lines(tmp_path / "new", [older_record(8), newer, hand_edited])
    frame = load_dataframe(run)
    assert list(frame.columns) == [*RECORD_FIELDS, "joules_per_call", "note"]
    assert frame["joules_per_call"].tolist()[1] == 4096
    assert frame["joules_per_call"].isna().tolist() == [True, False, True]
    assert frame["note"].tolist()[2] == "rerun after the driver update"
    completed = complete(newer)
    assert list(completed) == [*RECORD_FIELDS, "joules_per_call"]
    assert load_records(run)[1]["joules_per_call"] == 4096



def test_a_fields_type_is_read_from_its_annotation():
    @dataclasses.dataclass(frozen=True)
    class Energy:  # a part a later release might add
        joules: float | None = None
        per_repeat_joules: list[float] | None = None
        meter: str | None = None

    assert schema.json_types([Energy]) == {"joules": (float, ()), "per_repeat_joules": (list, (float,)),
                                           "meter": (str, ())}
    assert set(schema.FIELD_TYPES) == set(RECORD_FIELDS)
    assert schema.FIELD_TYPES["seq_len"] is int and schema.FIELD_TYPES["causal"] is bool
    annotated_float = {f.name for part in schema.PARTS for f in dataclasses.fields(part)
                       if f.type in ("float", "float | None")}
    assert set(schema.NUMBER_FIELDS) == annotated_float
    assert {"median_s", "padding", "gbps", "wall_s"} <= annotated_float
    assert set(schema.NUMBER_LISTS) == {"samples_s", "repeat_medians_s"}


def test_every_number_field_is_a_float_column_even_when_null(tmp_path):
    frame = load_dataframe(write_lines(tmp_path / "old", [older_record(8)]))
    assert {name: str(frame[name].dtype) for name in schema.NUMBER_FIELDS} == \
        dict.fromkeys(schema.NUMBER_FIELDS, "float64")
    assert frame["median_s"].tolist() == [1e-3] and frame["wall_s"].isna().all()


@pytest.mark.parametrize("field, value, expected", [
    ("wall_s", "fast", "float"), ("seq_len", 1.5, "int"), ("causal", 1, "bool"),
    ("harness_s", [0.1], "dict"), ("samples_s", 1e-3, "list"), ("n_samples", True, "int")])
def test_a_value_of_another_type_than_declared_skips_the_record(tmp_path, field, value, expected):
    run = write_lines(tmp_path / "bad", [older_record(8), {**older_record(16), field: value}])
    with pytest.warns(UserWarning, match=f"line 2 skipped: field '{field}': expected {expected}"):
        records = load_records(run)
    assert [r["seq_len"] for r in records] == [8]


def documented_fields() -> list[str]:
    """The field names of docs/records.md's "Record fields" list, in order: the backticked
    names before the first colon of each item."""
    lines = RECORDS_PAGE.read_text(encoding="utf-8").splitlines()
    start = lines.index("## Record fields") + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("#")), len(lines))
    items: list[str] = []
    for line in lines[start:end]:
        if line.startswith("- "):
            items.append(line[2:])
        elif line.startswith("  ") and items:
            items[-1] += " " + line.strip()
    return [name for item in items for name in re.findall(r"`(\w+)`", item.split(": ", 1)[0])]


def test_the_records_page_documents_every_field_and_no_other():
    documented = documented_fields()
    missing = [f for f in RECORD_FIELDS if f not in documented]
    extra = [f for f in documented if f not in RECORD_FIELDS]
    assert not missing, f"docs/records.md's Record fields list lacks {missing}"
    assert not extra, f"docs/records.md's Record fields list names {extra}, which the schema lacks"
    assert documented == list(RECORD_FIELDS), "docs/records.md lists the fields in another order"


def test_a_whole_number_written_as_a_float_still_loads_in_an_int_field(tmp_path):
    run = write_lines(tmp_path / "rewritten", [{**older_record(16), "peak_mem_bytes": 4096.0}])
    records = load_records(run)
    assert [r["peak_mem_bytes"] for r in records] == [4096.0]
