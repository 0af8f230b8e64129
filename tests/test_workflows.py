"""The CI workflows: both valid by GitHub's workflow schema, and the GPU gate's shell steps
(scripts/gpu-gate.sh) dry-run on made-up run directories: failed cases fail the job with and
without a baseline, a first run on main is stored as the baseline and says so, and the A/B
checkout is removed."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.spec import Case
from harness.store import capture_env, make_record

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
GATE = ROOT / "scripts" / "gpu-gate.sh"
# SchemaStore's schema of GitHub workflow files (Apache-2.0; src/schemas/json/github-workflow.json
# of github.com/SchemaStore/schemastore), kept here because tests run without the network
SCHEMA = ROOT / "tests" / "data" / "github-workflow.json"


def load_workflow(name: str) -> dict:
    """A workflow as GitHub reads it: YAML 1.1 reads the key `on` as True."""
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    if True in doc:
        doc["on"] = doc.pop(True)
    return doc


def steps_of(job: dict) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


# ---- the workflow files ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["cpu.yml", "gpu-regression.yml"])
def test_workflow_is_valid_by_githubs_schema(name):
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    doc = load_workflow(name)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in validator.iter_errors(doc)]
    assert errors == []
    # the schema sees a mistake: a step that both runs a command and uses an action
    job = next(iter(doc["jobs"].values()))
    job["steps"].append({"run": "true", "uses": "actions/checkout@v4"})
    assert not validator.is_valid(doc)


def test_gpu_workflow_serialises_gpu_jobs_and_runs_every_step_through_the_gate_script():
    gpu = load_workflow("gpu-regression.yml")
    job = gpu["jobs"]["gate"]
    assert "self-hosted" in job["runs-on"] and "gpu" in job["runs-on"]
    assert "head.repo.full_name == github.repository" in job["if"]  # no fork code on the runner
    assert gpu["concurrency"]["cancel-in-progress"] is False
    script = steps_of(job)
    for step in ("install", "mode", "run suites/ci.toml", "judge", "ab suites/ci.toml",
                 "export", "cleanup"):
        assert f"scripts/gpu-gate.sh {step}" in script
    assert "nvidia-smi" in script and "attnbench report" in script
    for needed in ("attnbench run", "attnbench ab", "attnbench compare --baseline",
                   "attnbench baseline save", "GITHUB_STEP_SUMMARY"):
        assert needed in GATE.read_text()
    assert "python -m pytest" in steps_of(load_workflow("cpu.yml")["jobs"]["test"])
    uploads = [s for s in job["steps"] if "upload-artifact" in s.get("uses", "")]
    assert any("steps.judge.outputs.stored" in s.get("if", "") for s in uploads)


def test_gpu_workflow_pins_torch_and_xformers_in_one_resolver_step():
    gpu = load_workflow("gpu-regression.yml")
    cpu = load_workflow("cpu.yml")
    assert gpu["env"]["TORCH_VERSION"] == cpu["env"]["TORCH_VERSION"]  # one torch in CI
    assert '"torch==$TORCH_VERSION"' in steps_of(cpu["jobs"]["test"])
    assert gpu["env"]["XFORMERS_VERSION"] and "cu130" in gpu["env"]["TORCH_INDEX"]
    gate = GATE.read_text()
    assert ('pip install "torch==$TORCH_VERSION" "xformers==$XFORMERS_VERSION" \\\n'
            '        --index-url "$TORCH_INDEX"') in gate
    assert '-c "$venv/pins.txt"' in gate  # the project's install cannot swap either


def test_gpu_workflow_removes_its_worktree_whatever_happens():
    job = load_workflow("gpu-regression.yml")["jobs"]["gate"]
    cleanup = next(s for s in job["steps"] if "gpu-gate.sh cleanup" in s.get("run", ""))
    assert cleanup["if"] == "always()"
    assert job["steps"][-1] is cleanup
    assert "git worktree remove --force" in GATE.read_text()


def test_pull_requests_get_the_ab_markdown_and_main_feeds_the_tracker():
    gpu = load_workflow("gpu-regression.yml")
    steps = gpu["jobs"]["gate"]["steps"]
    comment = next(s for s in steps if "pull-request-comment" in s.get("uses", ""))
    assert comment["with"]["path"] == "results/ab/compare.md"
    assert gpu["jobs"]["gate"]["permissions"]["pull-requests"] == "write"
    track = gpu["jobs"]["track"]
    assert track["needs"] == "gate" and "needs.gate.outputs.exported" in track["if"]
    exported = next(s for s in steps if "gpu-gate.sh export" in s.get("run", ""))
    assert "refs/heads/main" in exported["if"] and gpu["jobs"]["gate"]["outputs"]
    assert track["permissions"] == {"contents": "write"}
    bench = next(s for s in track["steps"]
                 if s.get("uses") == "benchmark-action/github-action-benchmark@v1")
    assert bench["with"]["tool"] == "customSmallerIsBetter"
    assert exported["run"].split()[-1] == bench["with"]["output-file-path"]
    assert "--format github-action-benchmark --out" in GATE.read_text()


# ---- dry runs of the gate's steps --------------------------------------------------------------

def record(impl: str, status: str = "ok", seed: int = 0) -> dict:
    case = Case(impl=impl, seq_len=64)
    result = {"status": status, "reason": "max error 3e-2 > 1e-3 <allowed>" if status != "ok"
              else ""}
    if status in ("ok", "mismatch"):
        samples = 1e-3 * np.exp(np.random.default_rng(seed).normal(0, 0.01, 30))
        result.update(samples_s=list(samples), median_s=float(np.median(samples)))
    return make_record(case, result)


def write_run(path: Path, records: list[dict]) -> Path:
    path.mkdir(parents=True)
    (path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (path / "env.json").write_text(json.dumps(capture_env(1, "ci", [])))
    return path


def gate(tmp_path, *args, store="never", baselines=None) -> subprocess.CompletedProcess:
    """scripts/gpu-gate.sh ARGS as the workflow runs it, GitHub's files under tmp_path."""
    env = {**os.environ, "ATTNBENCH_PYTHON": sys.executable, "STORE_BASELINE": store,
           "BASELINES_DIR": str(baselines or tmp_path / "baselines"), "BASELINE": "ci-gpu",
           "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
           "GITHUB_OUTPUT": str(tmp_path / "output.txt")}
    return subprocess.run(["bash", str(GATE), *map(str, args)], cwd=ROOT, env=env, check=False,
                          capture_output=True, text=True, timeout=300)


def read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


OK = [record("numpy"), record("torch.naive")]
MISMATCH = [record("numpy"), record("torch.naive", "mismatch")]


@pytest.mark.parametrize("store", ["missing", "never"])
def test_a_mismatch_fails_the_job_without_a_baseline(tmp_path, store):
    run = write_run(tmp_path / "ci", MISMATCH)
    result = gate(tmp_path, "judge", run, store=store)
    assert result.returncode == 1, result.stdout + result.stderr
    summary = read(tmp_path / "summary.md")
    assert "1 of 2 cases failed: 1 mismatch" in summary
    assert "torch.naive" in summary and "&lt;allowed&gt;" in summary  # a reason is escaped
    assert "PASS" not in summary and "stored=true" not in read(tmp_path / "output.txt")
    assert not (tmp_path / "baselines" / "ci-gpu").exists()  # a failing run is no baseline


def test_a_mismatch_fails_the_job_against_a_baseline_that_has_it_too(tmp_path):
    # `compare` alone calls a case failing on both sides `still_failing` and passes
    baselines = tmp_path / "baselines"
    write_run(baselines / "ci-gpu", [record("numpy", seed=1), record("torch.naive", "mismatch")])
    run = write_run(tmp_path / "ci", MISMATCH)
    result = gate(tmp_path, "judge", run, store="missing", baselines=baselines)
    assert result.returncode == 1, result.stdout + result.stderr
    summary = read(tmp_path / "summary.md")
    assert "1 mismatch" in summary and "regression gate" in summary  # compare.md follows
    assert (run / "compare.md").exists()


def test_a_first_ok_run_on_main_is_stored_as_the_baseline_not_passed(tmp_path):
    run = write_run(tmp_path / "ci", OK)
    result = gate(tmp_path, "judge", run, store="missing")
    assert result.returncode == 0, result.stdout + result.stderr
    summary = read(tmp_path / "summary.md")
    assert "Stored as the baseline `ci-gpu`: not compared with anything" in summary
    assert "PASS" not in summary
    assert "stored=true" in read(tmp_path / "output.txt")
    stored = tmp_path / "baselines" / "ci-gpu" / "results.jsonl"
    assert stored.read_text() == (run / "results.jsonl").read_text()
    # the next run on main is compared with it, and not stored again
    again = write_run(tmp_path / "ci2", OK)
    (tmp_path / "output.txt").unlink()
    result = gate(tmp_path, "judge", again, store="missing")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "regression gate" in read(again / "compare.md")
    assert "stored=true" not in read(tmp_path / "output.txt")


def test_an_ok_run_on_a_pull_request_without_a_baseline_says_it_was_not_compared(tmp_path):
    run = write_run(tmp_path / "ci", OK)
    result = gate(tmp_path, "judge", run, store="never")
    assert result.returncode == 0, result.stdout + result.stderr
    summary = read(tmp_path / "summary.md")
    assert "Not compared: no baseline `ci-gpu`" in summary and "PASS" not in summary
    assert not (tmp_path / "baselines").exists()


def test_a_run_where_nothing_ran_fails(tmp_path):
    unsupported = [make_record(Case(impl="xformers", seq_len=64),
                               {"status": "unsupported", "reason": "no CUDA device"})]
    run = write_run(tmp_path / "ci", unsupported)
    assert gate(tmp_path, "judge", run, store="missing").returncode == 1
    assert "Nothing ran" in read(tmp_path / "summary.md")


@pytest.mark.parametrize("args, message", [
    (["judge"], "judge: expected 1 argument(s), got 0"),
    (["judge", "no-such-dir"], "no-such-dir is not a run directory"),
    (["mode", "fast", "push", "main", "x"], "mode: expected ab or baseline, got 'fast'"),
    (["deploy"], "unknown command 'deploy'"),
])
def test_gate_script_mistakes_are_one_line_and_exit_2(tmp_path, args, message):
    result = gate(tmp_path, *args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_the_gate_is_baseline_on_main_and_what_was_asked_for_otherwise(tmp_path):
    assert gate(tmp_path, "mode", "", "push", "main", tmp_path / "base").returncode == 0
    assert gate(tmp_path, "mode", "baseline", "pull_request", "main",
                tmp_path / "base").returncode == 0
    assert read(tmp_path / "output.txt").splitlines() == ["mode=baseline", "mode=baseline"]
    assert not (tmp_path / "base").exists()  # no checkout without an A/B


def test_cleanup_removes_the_ab_worktree_and_its_virtualenv(tmp_path):
    repo = tmp_path / "repo"
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "f").write_text("x")
    subprocess.run([*git, "add", "f"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], check=True)
    base, venv = tmp_path / "base", tmp_path / "venv-base"
    subprocess.run([*git, "worktree", "add", "-q", "--detach", str(base), "HEAD"], check=True)
    venv.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    cleanup = ["bash", str(GATE), "cleanup", str(base), str(venv)]
    result = subprocess.run(cleanup, cwd=repo, env=env, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    listed = subprocess.run([*git, "worktree", "list", "--porcelain"], capture_output=True,
                            text=True, check=True).stdout
    assert str(base) not in listed and not base.exists() and not venv.exists()
    # and again, with nothing left to remove (a job that failed before the checkout)
    again = subprocess.run(cleanup, cwd=repo, env=env, capture_output=True, text=True,
                           timeout=60, check=False)
    assert again.returncode == 0, again.stderr


def test_export_writes_what_github_action_benchmark_reads(tmp_path):
    from harness.cli import build_parser

    if "export" not in build_parser().format_help():
        pytest.skip("attnbench export is not there yet")
    run = write_run(tmp_path / "ci", OK)
    out = tmp_path / "benchmark.json"
    result = gate(tmp_path, "export", run, out)
    assert result.returncode == 0, result.stdout + result.stderr
    entries = json.loads(out.read_text())
    assert len(entries) == 2
    assert all({"name", "unit", "value"} <= set(e) for e in entries)
