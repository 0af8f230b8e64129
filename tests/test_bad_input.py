"""Bad input, hostile text and damaged run directories: each gets one line and exit code 2, or
is shown as the plain text it is, or is skipped with a warning naming it; never a traceback,
never a lost record.

The property tests drive the command line in this process (`harness.cli.main`, `run
--dry-run`) so that hundreds of generated suites and argument lists take seconds."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import registry, values
from harness.cli import main
from harness.spec import load_suite
from harness.store import DamagedLineWarning, load_records

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = {"ATTNBENCH_PLUGINS": "tests.plugins.hostile"}
VALID_SUITE = """name = "tiny"
[sweep]
impls = ["numpy", "torch.naive"]
seq_len = [16, 32]
heads = 2
head_dim = 8
causal = [false, true]
[timing]
budget_s = 0.02
warmup_s = 0.001
min_samples = 3
"""
TINY = '[sweep]\nimpls = ["numpy"]\nseq_len = [8, 16, 32]\nheads = 1\nhead_dim = 4\n' \
       '[timing]\nbudget_s = 0.01\nwarmup_s = 0.001\nmin_samples = 3\n'


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_refusal(code: int, err: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err


def assert_valid_plan(code: int, out: str) -> None:
    """Exit 0 from a dry run: every listed case id is unique and parses back into a problem
    that can exist."""
    assert code == 0, out
    *ids, summary = out.rstrip("\n").split("\n")  # a path may hold \r: lines end in \n
    assert re.match(r"\d+ of \d+ planned cases to run", summary), summary
    assert len(ids) == len(set(ids)) == int(summary.split()[0])
    for case_id in ids:
        shape = re.search(r"/b(\d+)-h(\d+)-n(\d+)x(\d+)-d(\d+)/", case_id)
        assert shape, case_id
        batch, heads, n, n_kv, d = map(int, shape.groups())
        assert values.shape_problem(batch, heads, n, n_kv, d) is None


# -- property tests: generated and mutated suites, generated argument lists -------------------

scalar = st.one_of(st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
                   st.booleans(), st.text(max_size=12), st.sampled_from(
                       ["all", "numpy", "torch.naive", "float32", "bfloat16", "cpu", "cuda:0",
                        "kernel", "fwd", "fwd_bwd", "../x", "[/]", "pre"]))
toml_value = st.one_of(scalar, st.lists(scalar, max_size=3))
sweep_keys = st.sampled_from(["impls", "level", "mode", "device", "dtype", "batch", "heads",
                              "seq_len", "seq_len_kv", "head_dim", "causal", "seed", "padding",
                              "norm", "ffn_mult", "bogus"])
timing_keys = st.sampled_from(["warmup_s", "min_samples", "max_samples", "target_ci",
                               "budget_s", "min_sample_s", "timeout_s", "repeats", "bogus"])


def toml_literal(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(repr(value), repr(value))
    if isinstance(value, list):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    return json.dumps(value) if isinstance(value, str) else str(value)


@st.composite
def generated_suites(draw) -> bytes:
    lines = []
    if draw(st.booleans()):
        lines.append(f"name = {toml_literal(draw(st.one_of(st.text(max_size=10), scalar)))}")
    lines.append("[sweep]")
    base = {"impls": ["numpy"], "seq_len": [8], "heads": 1, "head_dim": 4}
    table = {**base, **draw(st.dictionaries(sweep_keys, toml_value, max_size=4))}
    lines += [f"{k} = {toml_literal(v)}" for k, v in table.items()]
    lines.append("[timing]")
    timing = draw(st.dictionaries(timing_keys, toml_value, max_size=3))
    lines += [f"{k} = {toml_literal(v)}" for k, v in timing.items()]
    return "\n".join(lines).encode("utf-8", "surrogatepass")


@st.composite
def mutated_suites(draw) -> bytes:
    data = bytearray(VALID_SUITE.encode())
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        how = draw(st.sampled_from(["flip", "insert", "delete", "cut"]))
        if how == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif how == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=6))
        elif how == "delete":
            del data[at:at + draw(st.integers(1, 8))]
        else:
            del data[at:]
    return bytes(data)


option_values = st.one_of(st.sampled_from(["nan", "inf", "-3", "0", "1", "2", "0.5", "5%", "",
                                           "1e9", "2GiB", "[/]", "abc", "torch.*", "true"]),
                          st.text(max_size=6))
options = st.sampled_from(["--impl", "--seq-len", "--dtype", "--device", "--causal", "--budget",
                           "--timeout", "--target-ci", "--threads", "--repeats", "--mem-limit",
                           "--out"])


def run_dry(capsys, tmp_path, suite: Path, extra: list[str]) -> tuple[int, str, str]:
    return cli(capsys, "run", suite, "--dry-run", *extra)


FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@FAST
@given(body=st.one_of(generated_suites(), mutated_suites()))
def test_any_suite_file_gives_a_valid_plan_or_one_line(tmp_path, capsys, body):
    suite = tmp_path / "generated.toml"
    suite.write_bytes(body)
    code, out, err = run_dry(capsys, tmp_path, suite, ["--out", str(tmp_path / "run")])
    if code == 0:
        assert_valid_plan(code, out)
    else:
        assert_one_line_refusal(code, err)
    assert not (tmp_path / "run").exists(), "a dry run or a refusal created the run directory"


@FAST
@given(argv=st.lists(st.tuples(options, option_values), max_size=4))
def test_any_command_line_gives_a_valid_plan_or_one_line(tmp_path, capsys, argv):
    suite = tmp_path / "tiny.toml"
    suite.write_text(TINY)
    flat = [part for option, value in argv for part in (option, value)]
    if "--out" not in flat:
        flat += ["--out", str(tmp_path / "run")]
    code, out, err = run_dry(capsys, tmp_path, suite, flat)
    if code == 0:
        assert_valid_plan(code, out)
    else:
        assert_one_line_refusal(code, err)


# -- values at the boundary: the CLI and the suite share one rule ------------------------------

@pytest.mark.parametrize("key, option, bad", [
    ("budget_s", "--budget", "nan"), ("budget_s", "--budget", "inf"),
    ("timeout_s", "--timeout", "inf"), ("timeout_s", "--timeout", "-1"),
    ("target_ci", "--target-ci", "nan"), ("target_ci", "--target-ci", "5"),
    ("repeats", "--repeats", "0"),
])
def test_a_timing_value_is_refused_alike_in_the_suite_and_on_the_command_line(
        tmp_path, capsys, key, option, bad):
    suite = tmp_path / "s.toml"
    suite.write_text(TINY.split("[timing]")[0] + f"[timing]\n{key} = {bad}\n")
    code, _, err = cli(capsys, "run", suite, "--dry-run")
    assert_one_line_refusal(code, err)
    assert f"timing.{key}" in err
    suite.write_text(TINY)
    code, _, err2 = cli(capsys, "run", suite, "--dry-run", option, bad)
    assert_one_line_refusal(code, err2)
    expected = err.split("expected ", 1)[1].split(", got")[0]
    assert expected in err2, (err, err2)  # the same words: the same rule


@pytest.mark.parametrize("argv, words", [
    (["--out", ""], "empty string"),
    (["--out", "{file}"], "is an existing file"),
    (["--out", "{file}/below"], "cannot be created under it"),
    (["--seq-len", "18446744073709551616"], "at most 2147483647"),
    (["--mem-limit", "nan"], "positive size"),
    (["--threads", "-3"], "positive integer"),
])
def test_bad_options_are_refused_before_anything_is_written(tmp_path, capsys, argv, words):
    suite = tmp_path / "s.toml"
    suite.write_text(TINY)
    afile = tmp_path / "a-file"
    afile.write_text("x")
    argv = [a.replace("{file}", str(afile)) for a in argv]
    code, _, err = cli(capsys, "run", suite, *argv)
    assert_one_line_refusal(code, err)
    assert words in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "s.toml"]


@pytest.mark.parametrize("argv", [["--threads", "-3"], ["--repeats", "-3"], ["--min-time", "nan"],
                                  ["--warmup", "-1"], ["--top", "0"], ["--out", ""]])
def test_profile_options_share_the_rules(capsys, argv):
    code, _, err = cli(capsys, "profile", *argv)
    assert_one_line_refusal(code, err)


@pytest.mark.parametrize("body, words", [
    (b"\xff\xfe\x00\x01 binary", "not a text file"),
    (b'name = "../../outside"\n' + TINY.encode(), "no path"),
    (b'name = "a/b"\n' + TINY.encode(), "no path"),
    (TINY.replace("seq_len = [8, 16, 32]", "seq_len = 18446744073709551616").encode(),
     "at most 2147483647"),
    (TINY.replace("seq_len = [8, 16, 32]", "seq_len = 2147483647\nbatch = 2147483647").encode()
     .replace(b"heads = 1", b"heads = 1000"), "64-bit index"),
])
def test_bad_suite_files_are_refused_with_one_line(tmp_path, capsys, body, words):
    suite = tmp_path / "s.toml"
    suite.write_bytes(body)
    code, _, err = cli(capsys, "run", suite, "--dry-run")
    assert_one_line_refusal(code, err)
    assert words in err


def test_a_suite_named_after_an_odd_file_keeps_its_run_directory_under_results(tmp_path, capsys):
    suite = tmp_path / "..odd name;$(x).toml"
    suite.write_text(TINY)
    code, out, _ = cli(capsys, "run", suite, "--dry-run")
    assert code == 0
    target = out.strip().splitlines()[-1].split("-> ")[1].split(" (dry run")[0]
    assert Path(target).parent == Path("results") and "/" not in Path(target).name
    assert not Path(target).name.startswith(".")


def test_a_plugin_that_cannot_be_imported_is_one_line(monkeypatch, capsys):
    monkeypatch.setenv("ATTNBENCH_PLUGINS", "no_such_module_here")
    monkeypatch.setattr(registry, "_LOADED", False)
    monkeypatch.setattr(registry, "_REGISTRY", {})
    code, _, err = cli(capsys, "list")
    assert_one_line_refusal(code, err)
    assert "no_such_module_here" in err


# -- library text is shown as text -------------------------------------------------------------

@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """A run whose adapters' names, reasons and exceptions hold console markup and HTML."""
    from tests.conftest import attnbench

    tmp = tmp_path_factory.mktemp("hostile")
    suite = tmp / "hostile.toml"
    suite.write_text('[sweep]\nimpls = ["hostile[/].raises", "hostile<b>.unsupported", '
                     '"hostile[red].ok", "numpy"]\nseq_len = [8, 16]\nheads = 1\nhead_dim = 4\n'
                     '[timing]\nbudget_s = 0.01\nwarmup_s = 0.001\nmin_samples = 3\n')
    result = attnbench("run", suite, "--out", tmp / "run", env=HOSTILE)
    return tmp / "run", result


def test_markup_in_library_text_is_printed_literally_and_every_case_runs(hostile_run):
    from tests.plugins.hostile import HOSTILE_TEXT

    out, result = hostile_run
    assert result.returncode == 1, result.stdout + result.stderr  # the raising adapter errored
    assert "Traceback" not in result.stderr and "MarkupError" not in result.stdout + result.stderr
    records = load_records(out)
    assert len(records) == 8
    assert {r["impl"]: r["status"] for r in records} == {
        "hostile[/].raises": "error", "hostile<b>.unsupported": "unsupported",
        "hostile[red].ok": "ok", "numpy": "ok"}
    assert f"cannot open [/tmp/x] {HOSTILE_TEXT}" in result.stdout  # exactly, brackets and all
    assert "hostile[red].ok" in result.stdout and "hostile[/].raises" in result.stdout


def test_list_shows_markup_in_names_literally(run_cli):
    result = run_cli("list", env=HOSTILE)
    assert result.returncode == 0, result.stderr
    assert "hostile[/].raises" in result.stdout and "hostile[red].ok" in result.stdout


def test_markdown_escapes_html_from_names_and_reasons(hostile_run, tmp_path, capsys):
    out, _ = hostile_run
    report = (out / "report.md").read_text()
    other = tmp_path / "other"
    shutil.copytree(out, other)
    code, _, _ = cli(capsys, "compare", out, other, "--md", tmp_path / "cmp.md")
    compared = (tmp_path / "cmp.md").read_text()
    for text in (report, compared):
        assert "hostile" in text
        for raw in ("<script", "<img", "<b>", "onerror=alert(2)>"):
            assert raw not in text, raw
        # the only HTML is attnbench's own collapsible sections, balanced
        assert text.count("<details>") == text.count("</details>")
        tags = set(re.findall(r"</?([a-zA-Z]+)", text))
        assert tags <= {"details", "summary"}, tags
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in report


# -- damaged run directories --------------------------------------------------------------------

@pytest.fixture(scope="module")
def measured_run(tmp_path_factory):
    from tests.conftest import attnbench

    tmp = tmp_path_factory.mktemp("measured")
    suite = tmp / "s.toml"
    suite.write_text(TINY)
    result = attnbench("run", suite, "--out", tmp / "run", "--no-report")
    assert result.returncode == 0, result.stdout + result.stderr
    return suite, tmp / "run"


@pytest.fixture
def small_run(measured_run, tmp_path):
    """A fresh copy of one small measured run, to damage."""
    suite, out = measured_run
    shutil.copytree(out, tmp_path / "run")
    return suite, tmp_path / "run"


def test_a_damaged_line_is_skipped_with_a_warning_and_resume_remeasures_only_its_case(
        small_run, run_cli):
    suite, out = small_run
    path = out / "results.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    lost = json.loads(lines[1])["case_id"]
    lines[1] = b"\x00\xffgarbage that once was a record\n"
    path.write_bytes(b"".join(lines))
    with pytest.warns(DamagedLineWarning, match="line 2 skipped"):
        assert lost not in {r["case_id"] for r in load_records(out)}
    report = run_cli("report", out)
    assert report.returncode == 0 and "line 2 skipped" in report.stderr
    assert lost in (out / "report.md").read_text()  # named as missing from the plan
    resumed = run_cli("run", suite, "--out", out, "--resume", "--no-report")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "1 cases to run" in resumed.stdout
    assert "line 2 skipped" in resumed.stderr and "Traceback" not in resumed.stderr
    # the lost case is measured again, and nothing else but figures already in doubt (a busy
    # machine's contended figures are re-measured, in any run)
    added = [json.loads(line) for line in path.read_bytes().splitlines()[len(lines):]]
    doubted = {r["case_id"] for r in load_records(out) if r.get("remeasured")}
    assert added and added[0]["case_id"] == lost
    assert {r["case_id"] for r in added} <= {lost} | doubted, [r["case_id"] for r in added]


@pytest.mark.parametrize("damage", [b"{not json", b"\x00\xff\xfe", b"[1, 2, 3]",
                                    b'{"peaks": "fast", "workers": {}}'])
def test_a_damaged_env_json_is_one_line_for_resume_and_compare(small_run, capsys, damage):
    suite, out = small_run
    (out / "env.json").write_bytes(damage)
    code, _, err = cli(capsys, "run", suite, "--out", out, "--resume")
    assert_one_line_refusal(code, err)
    assert "env.json: damaged" in err
    code, _, err = cli(capsys, "compare", out, out)
    assert_one_line_refusal(code, err)
    assert "env.json: damaged" in err
    code, _, err = cli(capsys, "report", out, "--format", "md")  # needs no machine facts
    assert code == 0 and (out / "report.md").exists()
    assert "warning: " in err and "env.json: damaged" in err and "Traceback" not in err
    assert len(load_records(out)) == 3, "no record was lost"


# -- sizes and install hints ---------------------------------------------------------------------

def test_an_out_of_memory_beyond_a_pebibyte_keeps_the_size_it_asked_for():
    from harness.run.execute import classify_exception

    record = classify_exception(MemoryError(
        "Unable to allocate 8.00 PiB for an array with shape (1, 8, 33554432, 33554432)"))
    assert record["status"] == "oom" and record["oom_bytes"] == 8 * 2**50


def test_a_missing_framework_names_the_extra_that_installs_it():
    import tomllib

    adapters = registry.adapters()
    assert adapters["tf.naive"].install_hint == "pip install 'attnbench[tf]'"
    assert adapters["xformers"].install_hint == "pip install 'attnbench[xformers]'"
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert {"tf", "xformers", "dev", "all"} <= set(extras)
    (everything,) = extras["all"]
    named = set(everything.removeprefix("attnbench[").removesuffix("]").split(","))
    assert named == set(extras) - {"all"}, "the all extra installs every other extra"


def test_the_built_in_suites_still_load():
    known = {name: a.level for name, a in registry.adapters().items()}
    for path in sorted((ROOT / "suites").glob("*.toml")):
        assert load_suite(str(path), known).cases()
