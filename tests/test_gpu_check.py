"""The GPU path as far as a CPU machine can take it: --cuda-graphs refused up front through the
real CLI, the GPU suites' plans, `timer` in a real run's records, scripts/gpu-check.sh's
refusals (no OUTDIR, a non-empty one, no GPU) with its helper's parts, and a rehearsal of the
whole script (about a minute on an idle 2-core machine)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import types
from pathlib import Path

import pytest

from harness.measure.devices import cuda_present
from harness.store import load_records
from tests.conftest import ROOT, attnbench

SCRIPT = ROOT / "scripts" / "gpu-check.sh"
sys.path.insert(0, str(ROOT / "scripts"))
import gpu_check  # noqa: E402  (scripts/ is not a package)

KERNEL_IMPLS = {"torch.naive", "torch.sdpa", "torch.sdpa.math", "torch.sdpa.flash",
                "torch.sdpa.efficient", "torch.sdpa.cudnn", "torch.flex", "jax.sdpa",
                "keras.ops.jax", "xformers"}


def one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


# ---- --cuda-graphs is refused before anything is written ------------------------------------

def test_cuda_graphs_on_the_cpu_is_refused_before_the_run_directory_exists(tmp_path):
    out = tmp_path / "run"
    result = attnbench("run", "smoke", "--cuda-graphs", "--out", out)
    assert result.returncode == 2
    line = one_line(result)
    assert "--cuda-graphs" in line and "CUDA graphs need a CUDA device" in line
    assert "40 of 40 planned cases" in line
    assert not out.exists()


def test_the_suite_key_is_refused_the_same_way_and_checked_by_the_same_rule(tmp_path):
    smoke = (ROOT / "suites" / "smoke.toml").read_text()
    suite = tmp_path / "graphs.toml"
    suite.write_text(smoke.replace("[timing]", "[timing]\ncuda_graphs = true"))
    result = attnbench("run", suite, "--dry-run")
    assert result.returncode == 2 and "key 'timing.cuda_graphs'" in one_line(result)
    suite.write_text(smoke.replace("[timing]", '[timing]\ncuda_graphs = "yes"'))
    result = attnbench("run", suite, "--dry-run")
    assert result.returncode == 2
    assert "timing.cuda_graphs': expected true or false, got 'yes'" in one_line(result)


# ---- the GPU suites --------------------------------------------------------------------------

def dry_run(*args) -> list[str]:
    result = attnbench("run", *args, "--dry-run")
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_the_gpu_suite_plans_every_kernel_on_cuda():
    lines = dry_run("gpu")
    ids = lines[:-1]
    # 10 impls x 2 dtypes x 2 head_dims x 5 seq_lens x 2 masks x 2 modes
    assert len(ids) == 800 and lines[-1].startswith("800 of 800 planned cases")
    assert {i.split("/")[0] for i in ids} == KERNEL_IMPLS
    assert all(i.split("/")[3] == "cuda" for i in ids)
    assert {i.split("/")[5] for i in ids} >= {"b4-h16-n16384x16384-d128", "b4-h16-n1024x1024-d64"}
    narrowed = dry_run("gpu", "--seq-len", "1024,2048", "--mode", "fwd")  # what the script may ask
    assert narrowed[-1].startswith("160 of 160")


def test_the_gpu_layers_suite_plans_both_levels_at_two_sizes():
    ids = dry_run("gpu-layers")[:-1]
    assert len(ids) == 72
    assert {i.split("/")[1] for i in ids} == {"mha", "encoder"}
    assert {i.split("/")[5] for i in ids} == {"b4-h16-n1024x1024-d64", "b4-h16-n4096x4096-d64"}


def test_the_check_s_decode_suite_plans_grouped_prefill_and_bottom_right_decode():
    ids = dry_run("gpu-check-decode")[:-1]
    assert len(ids) == 49  # 7 impls x (3 K/V head counts at N 2048 + 2 x 2 decode shapes)
    shapes = {i.split("/", 5)[5] for i in ids if i.startswith("torch.sdpa/")}
    assert "b8-h32-n1x16384-d128/causal/s0/kvh8/br" in shapes
    assert "b4-h32-n2048x2048-d128/causal/s0/kvh1" in shapes


# ---- a real run's records say which timer measured them --------------------------------------

def test_a_cpu_run_records_the_host_timer_and_none_where_nothing_was_timed(tmp_path):
    out = tmp_path / "run"
    result = attnbench("run", "smoke", "--impl", "torch.sdpa,torch.sdpa.efficient",
                       "--seq-len", "32", "--causal", "false", "--out", out, "--no-report")
    assert result.returncode == 0, result.stderr
    records = {r["impl"]: r for r in load_records(out)}
    assert records["torch.sdpa"]["status"] == "ok" and records["torch.sdpa"]["timer"] == "host"
    assert records["torch.sdpa.efficient"]["status"] == "unsupported"
    assert records["torch.sdpa.efficient"]["timer"] is None
    peaks = json.loads((out / "env.json").read_text())["peaks"]
    assert peaks["cpu"]["timer"] == "host"


# ---- scripts/gpu-check.sh refuses what it cannot do, in one line ------------------------------

def run_script(*args, path: str, python: str = sys.executable, timeout=60):
    env = {**os.environ, "PATH": path, "PYTHON": python}
    return subprocess.run(["/bin/bash", str(SCRIPT), *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture
def no_gpu_path(tmp_path) -> str:
    """A PATH with no nvidia-smi on it (an empty directory: the refusals need only bash)."""
    empty = tmp_path / "bin-empty"
    empty.mkdir()
    return str(empty)


@pytest.fixture
def fake_smi_path(tmp_path) -> str:
    """A PATH whose nvidia-smi answers (and does nothing): the GPU is then asked of torch."""
    fake = tmp_path / "bin"
    fake.mkdir()
    smi = fake / "nvidia-smi"
    smi.write_text("#!/bin/sh\nexit 0\n")
    smi.chmod(0o755)
    return str(fake)


@pytest.mark.parametrize("args, said", [
    ((), "missing OUTDIR"),
    (("--quick",), "missing OUTDIR"),
    (("a", "b"), "one OUTDIR expected"),
    (("--fast", "x"), "unknown option --fast"),
    (("x", "--archive"), "--archive needs a directory"),
])
def test_the_script_refuses_bad_arguments(args, said, no_gpu_path):
    result = run_script(*args, path=no_gpu_path)
    assert result.returncode == 2 and said in one_line(result)
    assert "usage: scripts/gpu-check.sh OUTDIR [--quick] [--archive DIR]" in result.stderr


def test_the_script_refuses_a_non_empty_outdir_and_a_file(tmp_path, no_gpu_path):
    full = tmp_path / "full"
    full.mkdir()
    (full / ".hidden").write_text("x")
    result = run_script(full, path=no_gpu_path)
    assert result.returncode == 2 and "is not empty" in one_line(result)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    result = run_script(a_file, path=no_gpu_path)
    assert result.returncode == 2 and "is not a directory" in one_line(result)


def test_the_script_refuses_an_archive_folder_that_is_not_there(tmp_path, no_gpu_path):
    result = run_script(tmp_path / "out", "--archive", tmp_path / "nope", path=no_gpu_path)
    assert result.returncode == 2
    assert f"--archive {tmp_path / 'nope'}: not a directory" in one_line(result)
    assert not (tmp_path / "out").exists()


def test_the_script_refuses_without_nvidia_smi_and_creates_nothing(tmp_path, no_gpu_path):
    out = tmp_path / "out"
    result = run_script(out, "--quick", path=no_gpu_path)
    assert result.returncode == 2 and "nvidia-smi not found" in one_line(result)
    assert not out.exists()
    empty = tmp_path / "empty"
    empty.mkdir()  # an empty OUTDIR is accepted: the refusal is about the GPU
    assert "nvidia-smi not found" in one_line(run_script(empty, path=no_gpu_path))


def test_the_script_refuses_when_torch_sees_no_gpu(tmp_path, fake_smi_path):
    if cuda_present():
        pytest.skip("this machine has a GPU")
    out = tmp_path / "out"
    result = run_script(out, path=fake_smi_path)
    assert result.returncode == 2
    assert "torch.cuda.is_available() is false" in one_line(result)
    assert not out.exists()


def test_the_script_refuses_when_a_dependency_is_missing(tmp_path, fake_smi_path):
    hidden = tmp_path / "hidden"  # shadows the real package with one that cannot be imported
    hidden.mkdir()
    (hidden / "array_api_compat.py").write_text("raise ImportError('hidden by the test')\n")
    python = tmp_path / "python-without"
    python.write_text(f"#!/bin/sh\nPYTHONPATH={hidden} exec {sys.executable} \"$@\"\n")
    python.chmod(0o755)
    out = tmp_path / "out"
    result = run_script(out, path=f"{fake_smi_path}:/usr/bin:/bin", python=str(python))
    assert result.returncode == 2
    assert "needs the Python package 'array_api_compat'" in one_line(result)
    assert not out.exists()


# ---- the script's helper ---------------------------------------------------------------------

def test_the_agreement_is_the_ratio_of_the_two_medians():
    harness = {"median_s": 0.0021, "ci_low_s": 0.002, "ci_high_s": 0.0022, "n_samples": 50,
               "calls_per_sample": 1, "timer": "cuda_event", "samples_s": [0.0021] * 50}
    record = gpu_check.agreement_record(harness, do_bench_ms=2.0, case_id="x")
    assert record["do_bench"]["median_s"] == pytest.approx(0.002)
    assert record["ratio"] == pytest.approx(1.05)
    assert record["harness"]["timer"] == "cuda_event" and "samples_s" not in record["harness"]


def test_a_do_bench_failure_keeps_the_harness_median_and_says_why():
    harness = {"median_s": 0.0021, "ci_low_s": 0.002, "ci_high_s": 0.0022, "n_samples": 50,
               "calls_per_sample": 1, "timer": "cuda_event"}
    record = gpu_check.agreement_record(harness, None, "x", "RuntimeError: no stream")
    assert record["harness"]["median_s"] == 0.0021 and record["ratio"] is None
    assert record["status"] == "do_bench failed"
    assert record["do_bench"] == {"error": "RuntimeError: no stream"}


@pytest.fixture
def cpu_agreement(monkeypatch):
    """The agreement step on a small CPU case, with a stand-in triton.testing.do_bench whose
    behaviour the test sets (`fake.do_bench`)."""
    monkeypatch.setattr(gpu_check, "AGREEMENT_CASE", {
        "impl": "torch.sdpa", "level": "kernel", "mode": "fwd", "device": "cpu",
        "dtype": "float32", "batch": 1, "heads": 2, "seq_len": 32, "head_dim": 8})
    monkeypatch.setattr(gpu_check, "AGREEMENT_TIMING", {
        "warmup_s": 0.001, "min_samples": 3, "max_samples": 3, "budget_s": 0.01})
    fake = types.ModuleType("triton.testing")
    monkeypatch.setitem(sys.modules, "triton", types.ModuleType("triton"))
    monkeypatch.setitem(sys.modules, "triton.testing", fake)
    return fake


def test_the_agreement_step_keeps_its_median_when_do_bench_raises(cpu_agreement):
    def failing(call, return_mode):
        call()
        raise RuntimeError("do_bench broke\nmore")

    cpu_agreement.do_bench = failing
    data = gpu_check.agreement()
    assert data["status"] == "do_bench failed" and data["ratio"] is None
    assert data["harness"]["median_s"] > 0 and data["harness"]["timer"] == "host"
    assert data["do_bench"]["error"] == "RuntimeError: do_bench broke"
    cpu_agreement.do_bench = lambda call, return_mode: 2.0
    data = gpu_check.agreement()
    assert data["status"] == "ok" and data["do_bench"]["median_s"] == pytest.approx(0.002)
    assert data["ratio"] == pytest.approx(data["harness"]["median_s"] / 0.002)


def test_versions_are_written_with_missing_packages_as_none(tmp_path):
    path = tmp_path / "versions.json"
    assert gpu_check.main(["versions", str(path)]) == 0
    data = json.loads(path.read_text())
    assert data["python"] == sys.version.split()[0]
    assert data["packages"]["torch"] and set(gpu_check.PACKAGES) <= set(data["packages"])
    assert data["cuda_available"] is False and data["devices"] == []
    assert gpu_check.AGREEMENT_CASE["impl"] == "torch.sdpa.flash"
    assert Path(SCRIPT).stat().st_mode & 0o111  # executable


# ---- a rehearsal of the whole script on this CPU machine -------------------------------------

# what the GPU image lacks (and attnbench's own installation: the device has no `pip install -e .`)
NOT_ON_THE_IMAGE = ("tensorflow", "keras", "tf_keras", "xformers", "memray", "attnbench",
                    "__editable__")
STEPS = ["nvidia-smi", "versions", "agreement", "run-fwd", "run-fwd_bwd", "run-8192",
         "run-decode", "run-flex", "run-graphs", "run-layers", "reports"]
LAYER_IMPLS = {"torch.mha", "torch.mha.eval", "torch.mha.naive", "keras.mha", "torch.encoder",
               "torch.encoder.eval", "torch.encoder.naive", "torch.compile.encoder",
               "keras.encoder"}


@pytest.fixture
def image_python(tmp_path) -> Path:
    """This interpreter as the GPU image has it: -S (no .pth file, so no editable install of
    attnbench) over a folder of links to this environment's packages, less NOT_ON_THE_IMAGE."""
    site = tmp_path / "site"
    site.mkdir()
    paths = sysconfig.get_paths()
    for folder in {Path(paths["purelib"]), Path(paths["platlib"])}:
        for entry in folder.iterdir():
            if not entry.name.lower().startswith(NOT_ON_THE_IMAGE) and entry.suffix != ".pth" \
                    and not (site / entry.name).exists():
                (site / entry.name).symlink_to(entry)
    python = tmp_path / "python-image"
    python.write_text(f'#!/bin/sh\nPYTHONPATH="${{PYTHONPATH:+$PYTHONPATH:}}{site}" '
                      f'exec {sys.executable} -S "$@"\n')
    python.chmod(0o755)
    return python


def test_a_cpu_rehearsal_of_the_whole_script_reaches_every_step(tmp_path, image_python):
    """scripts/gpu-check.sh --quick end to end, as on the device but for the GPU: a fake
    nvidia-smi, no attnbench console script on PATH, no installed attnbench, none of the
    packages the image lacks; every CUDA case is recorded unsupported and the peaks on CUDA
    fail, so every step's plumbing runs. The archive then holds every run."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text('#!/bin/sh\necho "NVIDIA H100 80GB HBM3 (rehearsal) $*"\n')
    smi.chmod(0o755)
    path = f"{bin_dir}:/usr/bin:/bin"
    assert shutil.which("attnbench", path=path) is None
    out, back = tmp_path / "out", tmp_path / "back"
    back.mkdir()
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "PATH": path,
           "PYTHON": str(image_python), "GPU_CHECK_WITHOUT_GPU": "1"}
    result = subprocess.run(["/bin/bash", str(SCRIPT), str(out), "--quick", "--archive",
                             str(back)], check=False, env=env, capture_output=True, text=True,
                            timeout=280, cwd=tmp_path)
    steps = dict(line.split("\t")[:2] for line in
                 (out / "steps.tsv").read_text().splitlines()[1:])
    assert list(steps) == STEPS, result.stdout + result.stderr
    for name, status in steps.items():  # a run slowed by a busy machine may be cut short
        assert status == "ok" or name.startswith("run-") and status.startswith("timed out"), \
            f"{name}: {status}\n{(out / 'logs' / f'{name}.log').read_text()[-2000:]}"
    assert "(rehearsal)" in (out / "nvidia-smi.txt").read_text()
    cuda_peaks = json.loads((out / "run-fwd" / "env.json").read_text())["peaks"]["cuda"]
    assert set(cuda_peaks["errors"]) == {"bfloat16", "bandwidth", "timer_resolution"}  # beside

    planned = []
    for name in STEPS:
        if name.startswith("run-"):
            run_env = json.loads((out / name / "env.json").read_text())
            assert "error" not in run_env.get("peaks", {}), name  # env.json stays readable
            planned += json.loads((out / name / "plan.json").read_text())["cases"]
    assert {c["impl"] for c in planned} == KERNEL_IMPLS | LAYER_IMPLS  # each in some run
    reached = {(c["impl"], c["mode"], c["seq_len"]) for c in planned}
    assert {("jax.sdpa", "fwd_bwd", 2048), ("keras.ops.jax", "fwd_bwd", 2048),
            ("torch.flex", "fwd_bwd", 1024), ("torch.sdpa.flash", "fwd", 8192)} <= reached

    assert sorted(p.name for p in back.iterdir()) == ["gpu-check.tar.gz", "summary.txt"]
    archive = back / "gpu-check.tar.gz"
    assert archive.stat().st_size < 16 * 2**20
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    for name in STEPS:
        if name.startswith("run-") and steps[name] == "ok":
            assert {f"out/{name}/results.jsonl", f"out/{name}/report.md"} <= names, name
    assert {"out/steps.tsv", "out/summary.txt", "out/agreement.json"} <= names
    assert "run-layers" in (back / "summary.txt").read_text()
