"""`attnbench profile` (harness/run/profile.py): Chrome traces, top operators, and where an
encoder block's time goes (attention, feed-forward, norm), forward and backward; torch in a
worker process, never in the command's."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness import registry
from harness.cli.profile import add_parser
from harness.run.profile import CATEGORIES, profile_case
from harness.spec import Case

ROOT = Path(__file__).resolve().parent.parent


def encoder(impl, **kw):
    base = dict(impl=impl, level="encoder", heads=2, head_dim=32, seq_len=64)
    return Case(**{**base, **kw})


def assert_shares(summary):
    shares = summary["shares"]
    assert set(shares) == set(CATEGORIES)
    assert sum(v for k, v in shares.items() if k != "attention.core") == pytest.approx(1.0)
    assert 0 < shares["attention.core"] <= shares["attention"]
    assert shares["feed_forward"] > 0 and shares["norm"] > 0


@pytest.mark.parametrize("impl", ["torch.encoder.naive", "torch.encoder", "torch.encoder.eval"])
@pytest.mark.parametrize("mode", ["fwd", "fwd_bwd"])
def test_profile_writes_a_trace_a_table_and_attributes_the_time(tmp_path, impl, mode):
    if impl.endswith(".eval") and mode == "fwd_bwd":
        pytest.skip("the eval fast path is inference only")
    case = encoder(impl, mode=mode)
    summary = profile_case(case, registry.get(impl), tmp_path, repeats=2, warmup=1)
    trace = json.loads((tmp_path / summary["trace"]).read_text())
    assert trace["traceEvents"]
    table = tmp_path / summary["trace"].replace(".trace.json", ".top.txt")
    assert "Self CPU" in table.read_text()
    assert summary["top_ops"] and summary["ms_per_call"] > 0
    assert_shares(summary)
    # backward nodes go where their forward operators went, not to "other"
    assert summary["shares"]["other"] < 0.5, summary["shares"]


def test_eval_profile_sees_the_fast_path(tmp_path):
    summary = profile_case(encoder("torch.encoder.eval"), registry.get("torch.encoder.eval"),
                           tmp_path, repeats=1, warmup=1)
    assert any("_transformer_encoder_layer_fwd" in op["name"] for op in summary["top_ops"]) or \
        "_transformer_encoder_layer_fwd" in (tmp_path / summary["trace"]).read_text()


def test_attention_share_grows_with_seq_len(tmp_path):
    """The seeds' claim, on a block small enough to test: attention's O(N²·d) overtakes the
    feed-forward's O(N·d²)."""
    adapter = registry.get("torch.encoder.naive")
    small = profile_case(encoder("torch.encoder.naive", seq_len=16), adapter, tmp_path, 2, 1,
                         min_time_s=0.2)
    large = profile_case(encoder("torch.encoder.naive", seq_len=2048), adapter, tmp_path, 2, 1,
                         min_time_s=0.3)
    assert large["shares"]["attention.core"] > small["shares"]["attention.core"] + 0.15
    assert large["shares"]["attention.core"] > large["shares"]["feed_forward"]


def test_cmd_profile_end_to_end(tmp_path, capsys):
    suite = tmp_path / "tiny.toml"
    suite.write_text('name = "tiny"\n[sweep]\nimpls = ["torch.encoder.naive", "keras.encoder"]\n'
                     'level = "encoder"\nmode = ["fwd", "fwd_bwd"]\nheads = 2\nhead_dim = 16\n'
                     'seq_len = [16, 32]\n')
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["profile", str(suite), "--seq-len", "32", "--mode", "fwd_bwd",
                              "--out", str(tmp_path / "run"), "--repeats", "1", "--warmup", "0",
                              "--min-time", "0", "--threads", "1"])
    assert args.func(args) == 0
    folder = tmp_path / "run" / "profile"
    summary = json.loads((folder / "summary.json").read_text())
    assert [c["case_id"] for c in summary["cases"]] == [
        "torch.encoder.naive/encoder/fwd_bwd/cpu/float32/b1-h2-n32x32-d16/full/s0"]
    assert (folder / summary["cases"][0]["trace"]).is_file()
    assert "| 32 |" in (folder / "summary.md").read_text()
    out = capsys.readouterr().out
    assert "skipped keras.encoder" in out and "torch" in out
    assert summary["torch"] and summary["threads"] == 1


def test_cmd_profile_runs_torch_in_a_worker_not_in_its_own_process(tmp_path):
    suite = tmp_path / "tiny.toml"
    suite.write_text('[sweep]\nimpls = ["torch.encoder.naive"]\nlevel = "encoder"\nheads = 2\n'
                     'head_dim = 16\nseq_len = 16\n')
    argv = ["profile", str(suite), "--out", str(tmp_path / "run"), "--repeats", "1",
            "--warmup", "0", "--min-time", "0", "--threads", "1"]
    code = ("import sys; from harness.cli import main; code = main(%r); "
            "print('torch imported here:', 'torch' in sys.modules, 'exit', code)" % argv)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, timeout=300)
    last = result.stdout.strip().splitlines()[-1]
    assert last == "torch imported here: False exit 0", result.stdout + result.stderr
    assert (tmp_path / "run" / "profile" / "summary.json").is_file()


def test_cmd_profile_refuses_what_it_cannot_profile(tmp_path):
    from harness.cli.args import UsageError
    from harness.values import BadValue

    suite = tmp_path / "tf.toml"
    suite.write_text('[sweep]\nimpls = ["keras.encoder"]\nlevel = "encoder"\nseq_len = 8\n')
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["profile", str(suite), "--out", str(tmp_path / "x")])
    with pytest.raises(UsageError, match="no torch case"):
        args.func(args)
    args = parser.parse_args(["profile", str(suite), "--mode", "backward"])
    with pytest.raises(BadValue, match="--mode"):  # the plan's filters are checked below the CLI
        args.func(args)
    assert not (tmp_path / "x").exists()
