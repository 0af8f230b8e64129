"""`attnbench recommend`: on synthetic records, the fastest qualifying implementation with its
margin and bootstrap probability, ties within noise, the nearest measured shape, and every
rejection reason; end to end from the smoke run, without --from (measured now), and bad input
as one line with exit code 2."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.analysis.recommend import (RecommendError, dispatch_table, p_faster, recommend,
                                        rejection)

ROOT = Path(__file__).resolve().parent.parent


def attnbench(*args, cwd=ROOT):
    """`python -m harness.cli ARGS` in `cwd` (the harness importable from this checkout)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "harness.cli", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)


PROBLEM = dict(batch=1, heads=8, seq_len=1024, head_dim=64, dtype="float32", device="cpu",
               causal=False, mode="fwd")


def rec(impl, median=1e-3, status="ok", spread=0.01, n=40, seed=0, **extra):
    """A record whose samples scatter log-normally by `spread` around `median`."""
    r = dict(impl=impl, level="kernel", status=status, reason="", padding=0.0, **PROBLEM)
    r["seq_len_kv"] = r["seq_len"]
    if status == "ok":
        samples = median * np.exp(np.random.default_rng(seed).normal(0, spread, n))
        r.update(median_s=float(np.median(samples)), samples_s=[float(s) for s in samples],
                 peak_mem_bytes=1 << 20, stable=True)
    r.update(extra)
    return r


def verdicts(answer) -> dict[str, tuple[str, str]]:
    return {x["impl"]: (x["verdict"], x["reason"]) for x in answer["implementations"]}


def test_the_fastest_agreeing_implementation_wins_with_its_margin_and_probability():
    answer = recommend([rec("slow", 3e-3, seed=1), rec("fast", 1e-3, seed=2),
                        rec("middle", 1.5e-3, seed=3)], PROBLEM)
    assert answer["recommended"] == "fast" and answer["exact"]
    assert answer["runner_up"] == "middle" and answer["margin"] == pytest.approx(1.5, rel=0.02)
    assert answer["p_faster"] > 0.99 and not answer["tie"]
    v = verdicts(answer)
    assert v["slow"][0] == "slower" and "3.0" in v["slow"][1][:15]
    assert v["middle"][0] == "slower"


def test_two_implementations_within_noise_are_a_tie():
    answer = recommend([rec("a", 1.000e-3, spread=0.05, seed=4),
                        rec("b", 1.005e-3, spread=0.05, seed=5)], PROBLEM)
    assert answer["tie"] and answer["tied_with"] == [
        {"a": "b", "b": "a"}[answer["recommended"]]]
    assert answer["p_faster"] < 0.95
    assert verdicts(answer)[answer["tied_with"][0]][0] == "tie"


def test_every_rejection_reason_is_named():
    records = [
        rec("winner", 2e-3),
        rec("unsup", status="unsupported", reason="needs CUDA"),
        rec("wrong", status="mismatch", max_abs_err=0.5, tolerance=1e-5, median_s=1e-4),
        rec("broke", status="error", reason="RuntimeError: boom"),
        rec("slowpoke", status="timeout", reason="past 120 s"),
        rec("big", status="oom", oom_bytes=3 << 30, predicted=True),
        rec("shaky", 1e-4, stable=False, instability="contended 60%"),
        rec("hungry", 1e-4, peak_mem_bytes=1 << 30),
        rec("unknown_mem", 1e-4, peak_mem_bytes=None),
    ]
    answer = recommend(records, PROBLEM, budget=256 << 20)
    assert answer["recommended"] == "winner" and answer["runner_up"] is None
    v = {impl: reason for impl, (verdict, reason) in verdicts(answer).items()
         if verdict == "rejected"}
    assert v["unsup"] == "unsupported: needs CUDA"
    assert v["wrong"] == "mismatch: max_abs_err 0.5 > tolerance 1e-05"
    assert v["broke"] == "error: RuntimeError: boom"
    assert v["slowpoke"] == "timeout: past 120 s"
    assert v["big"].startswith("out of memory, asked for 3.07e+03 MiB (predicted")
    assert v["shaky"] == "unstable figure, not trusted: contended 60%"
    assert v["hungry"] == "over the memory budget: needs 1.02e+03 MiB, budget 256 MiB"
    assert "memory was not measured" in v["unknown_mem"]
    # without a budget the memory-hungry one is the fastest that qualifies
    assert recommend(records, PROBLEM)["recommended"] in ("hungry", "unknown_mem")


def test_nothing_qualifies_and_the_answer_says_so():
    answer = recommend([rec("a", status="oom"), rec("b", status="unsupported", reason="x")],
                       PROBLEM)
    assert answer["recommended"] is None and answer["runner_up"] is None
    assert rejection(rec("a", status="oom"), None) == "out of memory"


def test_the_nearest_measured_shape_answers_and_says_so():
    small = [rec("a", 1e-3, seq_len=512, seq_len_kv=512), rec("b", 2e-3, seq_len=512,
                                                               seq_len_kv=512)]
    large = [rec("a", 9e-3, seq_len=4096, seq_len_kv=4096),
             rec("b", 3e-3, seq_len=4096, seq_len_kv=4096)]
    near_small = recommend(small + large, {**PROBLEM, "seq_len": 700})
    assert not near_small["exact"] and near_small["shape"]["seq_len"] == 512
    assert near_small["recommended"] == "a"
    assert recommend(small + large, {**PROBLEM, "seq_len": 3000})["recommended"] == "b"
    with pytest.raises(RecommendError, match="no kernel case was measured on cpu bfloat16"):
        recommend(small, {**PROBLEM, "dtype": "bfloat16"})


def test_the_dispatch_table_has_one_answer_per_shape_in_order():
    records = [rec(i, m, seq_len=n, seq_len_kv=n, seed=k)
               for k, (n, i, m) in enumerate([(128, "a", 1e-4), (128, "b", 3e-4),
                                               (1024, "a", 9e-3), (1024, "b", 3e-3)])]
    table = dispatch_table(records)
    assert [(t["shape"]["seq_len"], t["recommended"]) for t in table] == [(128, "a"),
                                                                           (1024, "b")]


def test_the_bootstrap_probability_follows_the_evidence():
    rng = np.random.default_rng(0)
    same = rng.normal(1.0, 0.05, 60)
    assert 0.2 < p_faster(same, same) < 0.8
    assert p_faster(same * 0.8, same) > 0.99
    assert p_faster([1.0], [2.0]) is None


# ---- end to end ---------------------------------------------------------------------------

SHAPE = ["--batch", "1", "--heads", "2", "--seq-len", "64", "--head-dim", "16",
         "--dtype", "float32", "--device", "cpu"]


@pytest.fixture(scope="module")
def smoke(smoke_run):
    from test_report import smoke_run_dir

    return smoke_run_dir(smoke_run)


def test_recommend_from_a_smoke_run(smoke):
    result = attnbench("recommend", "--from", smoke, *SHAPE, "--seq-len", "50", "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    records = [json.loads(line) for line in (smoke / "results.jsonl").open()]
    at = {r["impl"]: r for r in records if r["seq_len"] == 64 and not r["causal"]}
    assert answer["shape"]["seq_len"] == 64 and answer["exact"] is False
    winner = at[answer["recommended"]]
    assert winner["status"] == "ok" and winner["stable"] is not False
    qualified = [r for r in at.values() if r["status"] == "ok" and r["stable"] is not False]
    assert winner["median_s"] == min(r["median_s"] for r in qualified)
    for x in answer["implementations"]:
        if at[x["impl"]]["status"] == "unsupported":
            assert x["verdict"] == "rejected" and x["reason"].startswith("unsupported: ")
    text = attnbench("recommend", "--from", smoke, *SHAPE, "--seq-len", "50")
    assert "nearest measured shape: b1 h2 N=64 d16" in text.stdout
    assert f"recommended: {answer['recommended']}" in text.stdout
    table = attnbench("recommend", "--from", smoke, "--table")
    assert table.returncode == 0 and len(table.stdout.splitlines()) == 1 + 4  # 2 N × 2 masks


def test_recommend_without_from_measures_the_problem_now(tmp_path):
    result = attnbench("recommend", *SHAPE, "--seq-len", "32", "--impl", "numpy,torch.naive",
                       "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["measured_now"] is True and answer["exact"] is True
    assert answer["recommended"] in ("numpy", "torch.naive")
    run = tmp_path / answer["source"]
    records = [json.loads(line) for line in (run / "results.jsonl").open()]
    assert {r["impl"] for r in records} == {"numpy", "torch.naive"}
    assert (run / "plan.json").is_file()
    others = [x for x in answer["implementations"] if x["impl"] != answer["recommended"]]
    assert others and all(x["reason"] for x in others)


@pytest.mark.parametrize("args, words", [
    (["--dtype", "float8"], "--dtype: expected one of"),
    (["--device", "tpu"], "--device: expected"),
    (["--seq-len", "0"], "--seq-len: expected a positive integer"),
    (["--mode", "bwd"], "--mode: expected one of fwd, fwd_bwd"),
    (["--mem-budget", "lots"], "--mem-budget: expected"),
    (["--from", "."], "is not a run directory"),
    (["--kv-heads", "3"], "--kv-heads: heads (2) must be a multiple of kv_heads (3)"),
    (["--seq-len-kv", "128", "--causal"], "ambiguous: expected --causal-align top_left or"),
    (["--seq-len-kv", "64", "--causal-align", "diagonal"], "--causal-align: expected one of"),
])
def test_bad_input_is_one_line_and_exit_2(smoke, args, words):
    result = attnbench("recommend", "--from", smoke, *SHAPE, *args)
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and words in line and "Traceback" not in result.stderr


def test_table_needs_a_run_and_a_question_needs_its_shape(tmp_path):
    for args, words in ((["--table"], "--table: expected --from RUN"),
                        (["--dtype", "float32"], "missing --batch, --heads")):
        result = attnbench("recommend", *args)
        assert result.returncode == 2 and words in result.stderr, result.stderr


def test_grouped_and_decode_problems_are_answered_among_their_own_kind():
    """kv_heads is a size (a nearest shape may differ in it); the alignment is a kind."""
    decode = dict(seq_len=1, seq_len_kv=4096, causal=True, kv_heads=2)
    records = [rec("a", 2e-3, **decode, causal_align="bottom_right"),
               rec("b", 1e-3, **decode, causal_align="top_left"),
               rec("c", 9e-3, **decode, causal_align="bottom_right", seed=1)]
    asked = {**PROBLEM, **decode, "causal_align": "bottom_right"}
    answer = recommend(records, asked)
    assert answer["exact"] and answer["recommended"] == "a"  # b solved the other problem
    assert {i["impl"] for i in answer["implementations"]} == {"a", "c"}
    nearer = recommend(records, {**asked, "kv_heads": 4})
    assert not nearer["exact"] and nearer["shape"]["kv_heads"] == 2


@pytest.mark.parametrize("args, words", [
    (["--window", "8"], "--window: a sliding window keeps each query's most recent keys"),
    (["--causal", "--window", "80"], "window 80 covers all 64 keys"),
    (["--lengths", "zipf"], "--lengths: expected one of constant, uniform, longtail, bimodal"),
    (["--softcap", "-1"], "--softcap: expected a positive logit cap"),
])
def test_the_problem_takes_every_axis_and_refuses_as_a_suite_would(tmp_path, capsys, args, words):
    from harness.cli import main

    code = main(["recommend", *SHAPE, *args, "--from", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err
