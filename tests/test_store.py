"""The run directory survives a killed writer, and loads into pandas with stable columns."""
import json

from harness.spec import Case
from harness.store import RECORD_FIELDS, RunDir, capture_env, load_dataframe, load_records, make_record


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
