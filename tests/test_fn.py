"""A torch function as an implementation (`run --fn MODULE:FUNCTION`, a suite's `sweep.fn`):
checked against float64 and measured like any adapter, refused with one line before anything
runs when it cannot be imported or called, and never asked a case it has no argument for."""
import pytest

from harness.store import load_records
from tests.conftest import attnbench

MODULE = "tests.plugins.my_attn"
FAST = ("--threads", "1", "--no-report", "--quiet")


def statuses(run_dir) -> dict[str, str]:
    return {r["case_id"]: r["status"] for r in load_records(run_dir)}


def test_a_correct_function_is_ok_and_one_ignoring_causal_mismatches(tmp_path):
    out = tmp_path / "run"
    result = attnbench("run", "smoke", "--seq-len", "64", "--impl", "fn:*", "--out", out, *FAST,
                       "--fn", f"{MODULE}:attention", "--fn", f"{MODULE}:ignores_causal")
    assert result.returncode == 1, result.stdout + result.stderr  # a mismatch fails the run
    found = statuses(out)
    for name, causal, expected in (("attention", "full", "ok"), ("attention", "causal", "ok"),
                                   ("ignores_causal", "full", "ok"),
                                   ("ignores_causal", "causal", "mismatch")):
        case_id = f"fn:{MODULE}:{name}/kernel/fwd/cpu/float32/b1-h2-n64x64-d16/{causal}/s0"
        assert found.pop(case_id) == expected, case_id
    assert not found
    ok = [r for r in load_records(out) if r["status"] == "ok"]
    assert all(r["max_abs_err"] <= r["tolerance"] and r["median_s"] > 0 for r in ok)


def test_a_function_joins_the_suites_implementations(tmp_path):
    result = attnbench("run", "smoke", "--seq-len", "64", "--fn", f"{MODULE}:attention",
                       "--out", tmp_path / "run", "--dry-run")
    assert result.returncode == 0, result.stderr
    impls = {line.split("/")[0] for line in result.stdout.splitlines() if "/kernel/" in line}
    assert {f"fn:{MODULE}:attention", "numpy", "torch.sdpa"} <= impls


@pytest.mark.parametrize("given, said", [
    ("tests.plugins.no_such_module:attention", "cannot import 'tests.plugins.no_such_module'"),
    (f"{MODULE}:no_such_function", f"module '{MODULE}' has no 'no_such_function'"),
    (f"{MODULE}:F", "F is a module, not a function"),
    (f"{MODULE}:takes_a_mask", "missing a required argument: 'mask'"),
    ("tests/plugins/my_attn.py:attention", "expected a torch function as MODULE:FUNCTION"),
    (MODULE, "expected a torch function as MODULE:FUNCTION"),
])
def test_a_function_that_cannot_be_loaded_is_one_line_and_exit_2(tmp_path, given, said):
    out = tmp_path / "run"
    result = attnbench("run", "smoke", "--fn", given, "--out", out)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and said in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not out.exists()  # refused before anything ran


SUITE = f"""
[sweep]
fn = ["{MODULE}:attention", "{MODULE}:grouped"]
batch = 1
heads = 2
seq_len = 32
head_dim = 16
causal = true
causal_align = "top_left"

[[variants]]
mode = ["fwd", "fwd_bwd"]

[[variants]]
seq_len_kv = 48

[[variants]]
kv_heads = 1

[[variants]]
window = 8

[[variants]]
seq_len_kv = 48
causal_align = "bottom_right"

[[variants]]
padding = 0.25

[timing]
warmup_s = 0.005
min_samples = 3
max_samples = 10
budget_s = 0.02
"""


def key(name, mode="fwd", kv_heads=2, window=0, seq_len_kv=32, align="top_left", padding=0.0):
    """What tells the suite's cases apart, as the records hold it."""
    return name, mode, kv_heads, window, seq_len_kv, align, padding


def test_suite_key_runs_what_a_function_declares_and_refuses_the_rest(tmp_path):
    suite, out = tmp_path / "fn.toml", tmp_path / "run"
    suite.write_text(SUITE)
    result = attnbench("run", suite, "--out", out, *FAST)
    assert result.returncode == 0, result.stdout + result.stderr
    records = {key(r["impl"].rpartition(":")[2], r["mode"], r["kv_heads"], r["window"],
                   r["seq_len_kv"], r["causal_align"], r["padding"]): r
               for r in load_records(out)}
    runs = {key("attention"), key("grouped"), key("grouped", mode="fwd_bwd"),
            key("attention", seq_len_kv=48), key("grouped", seq_len_kv=48),  # top-left
            key("grouped", kv_heads=1)}  # declared by the function
    assert len(records) == 14 and runs <= set(records)
    for found, record in records.items():
        assert record["status"] == ("ok" if found in runs else "unsupported"), (found, record)
    for refused, said in ((key("attention", mode="fwd_bwd"), "supports modes fwd, not fwd_bwd"),
                          (key("attention", kv_heads=1), "takes no grouped K/V heads"),
                          (key("grouped", window=8), "takes no sliding-window mask"),
                          (key("grouped", seq_len_kv=48, align="bottom_right"),
                           "cannot align a causal mask bottom-right"),
                          (key("attention", padding=0.25), "takes no key-padding mask")):
        assert said in records[refused]["reason"]


@pytest.mark.parametrize("table, said", [
    (f'fn = ["{MODULE}:takes_a_mask"]', "key 'sweep.fn' tests.plugins.my_attn:takes_a_mask"),
    ('fn = ["not a path"]', "key 'sweep.fn': expected a torch function as MODULE:FUNCTION"),
    (f'impls = ["numpy"]\n[[variants]]\nfn = ["{MODULE}:attention"]',
     "give it in [sweep], not in a variant"),
])
def test_a_bad_suite_function_is_one_line_and_exit_2(tmp_path, table, said):
    suite = tmp_path / "bad.toml"
    suite.write_text(f"[sweep]\nseq_len = 32\n{table}\n")
    result = attnbench("run", suite, "--out", tmp_path / "run", "--dry-run")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and said in result.stderr, result.stderr
    assert str(suite) in result.stderr


def test_ab_measures_a_function_on_both_sides(tmp_path):
    out = tmp_path / "ab"
    result = attnbench("ab", "smoke", "--seq-len", "32", "--causal", "false", "--impl", "fn:*",
                       "--threads", "1", "--quiet", "--fn", f"{MODULE}:attention", "--out", out)
    assert result.returncode == 0, result.stdout + result.stderr
    for side in ("base", "head"):
        (record,) = load_records(out / side)
        assert record["impl"] == f"fn:{MODULE}:attention" and record["status"] == "ok"


def test_an_interrupted_run_says_to_resume_with_its_functions():
    from harness.cli.run import _function_options
    from harness.spec import Case, TimingSettings
    from harness.store import Plan

    cases = (Case(impl=f"fn:{MODULE}:attention"), Case(impl="numpy"),
             Case(impl=f"fn:{MODULE}:attention", seq_len=64))
    plan = Plan(suite="smoke", suite_path=None, filters={}, overrides={},
                timing=TimingSettings(), cases=cases, extra={"suite_arg": "smoke"})
    assert _function_options(plan) == f" --fn {MODULE}:attention"
