"""Shared helpers for the tests that run the command line in a subprocess."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def attnbench(*args, env=None, timeout=600):
    """Run `python -m harness.cli ARGS` from the project root; return the CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "harness.cli", *map(str, args)], cwd=ROOT,
                          env=full_env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def run_cli():
    return attnbench


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """`attnbench run smoke` as a user runs it (progress lines, reports), once per session:
    (run directory, the finished process). Tests that only read the run share it."""
    out = tmp_path_factory.mktemp("smoke-run") / "run"
    return out, attnbench("run", "smoke", "--out", out)
