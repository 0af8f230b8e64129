"""Shared by tests/test_layers.py and tests/test_fwd_bwd.py: layer cases, a quick checked call
(the harness's own checking path without the timing and memory passes), and a child process
for the TensorFlow-family cases (TensorFlow never enters the pytest process: torch is here)."""
from __future__ import annotations

import functools
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.problem.check import check_output
from harness.problem.truth import problem, tolerance_for
from harness.spec import Case
from harness.spec import TimingSettings

ROOT = Path(__file__).resolve().parent.parent
FAST = TimingSettings(warmup_s=0.001, min_samples=2, max_samples=3, budget_s=0.01)
HAVE_TF = all(importlib.util.find_spec(m) is not None for m in ("tensorflow", "keras"))
needs_tf = pytest.mark.skipif(not HAVE_TF, reason="tensorflow and keras not installed "
                                                   "(pip install 'attnbench[tf]')")
# (batch, heads, seq_len, head_dim): ordinary; d_model 96 with 3 heads (odd); one token
SHAPES = [(2, 4, 16, 16), (1, 3, 23, 32), (1, 2, 1, 16)]
# (causal, padding): none, causal, key padding, both
MASKS = [(False, 0.0), (True, 0.0), (False, 0.25), (True, 0.25)]
TORCH_LAYERS = {"mha": ["torch.mha", "torch.mha.eval", "torch.mha.naive"],
                "encoder": ["torch.encoder", "torch.encoder.eval", "torch.encoder.naive"]}
KERAS_LAYERS = {"mha": ["keras.mha"], "encoder": ["keras.encoder"]}


def layer_cases(impls: dict, mode: str, dtypes, shapes=SHAPES, masks=MASKS,
                norms=("post",)) -> list[Case]:
    """Problem-major order, so consecutive cases share the cached inputs and reference."""
    return [Case(impl=impl, level=level, mode=mode, dtype=dtype, batch=b, heads=h, seq_len=n,
                 head_dim=d, causal=causal, padding=padding,
                 norm=norm if level == "encoder" else "post")
            for level, names in impls.items()
            for norm in (norms if level == "encoder" else ("post",))
            for (b, h, n, d) in shapes for causal, padding in masks
            for dtype in dtypes for impl in names]


def quick_check(case, adapter) -> dict:
    """Prepare, one call, `check_output` (output and, in fwd_bwd, gradients); no timing."""
    reasons = adapter.unsupported(case)
    if reasons:
        return {"status": "unsupported", "reason": "; ".join(reasons)}
    inputs, ref = problem(case)
    prepared = adapter.prepare(case, inputs)
    try:
        result = check_output(case, prepared, prepared.call(), ref, tolerance_for(case))
    finally:
        prepared.close()
    return result


def child_env(plugins: str | None = None, family: str = "tensorflow") -> dict:
    from harness.run.process import FAMILIES

    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "2",
           "KERAS_BACKEND": "tensorflow", **FAMILIES[family][1]}
    if plugins:
        env["ATTNBENCH_PLUGINS"] = plugins
    return env


def run_tf_cases(cases: list[Case], plugins: str | None = None, timeout: int = 300,
                 full: list[Case] = (), family: str = "tensorflow") -> dict:
    """Run one family's cases in tests/tf_cases_worker.py (a quick check each; those in `full`
    through the worker's whole path, timing and memory included); its JSON answer."""
    payload = json.dumps({"family": family, "cases": [c.to_dict() for c in cases],
                          "full": [c.case_id for c in full]})
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "tf_cases_worker.py")],
                          input=payload, capture_output=True, text=True, cwd=ROOT,
                          env=child_env(plugins, family), timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        pytest.fail(f"{family} worker failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


# --- JAX and Keras on JAX / torch: one child per family for the whole session -------------

HAVE = {"jax": importlib.util.find_spec("jax") is not None,
        "keras": importlib.util.find_spec("keras") is not None}
FAMILY_NEEDS = {"jax": ("jax",), "keras-jax": ("jax", "keras"), "keras-torch": ("keras",)}
KERAS_BACKEND_LAYERS = {"keras-jax": {"mha": ["keras.mha.jax"], "encoder": ["keras.encoder.jax"]},
                        "keras-torch": {"mha": ["keras.mha.torch"],
                                        "encoder": ["keras.encoder.torch"]}}
# (batch, heads, seq_len, seq_len_kv, head_dim, causal): ordinary, odd, one token, Nq < Nk.
# Every new shape costs these families compilations (jit, or eager Keras on JAX compiling each
# op), so the contract here is fewer cases than in-process: each kind once, float32, and the
# other dtypes on the odd shape.
FAMILY_KERNEL_CASES = [(1, 2, 1, 1, 16, False), (1, 3, 77, 77, 40, True),
                       (1, 2, 33, 50, 24, True)]
FAMILY_KERNELS = {"jax": ["jax.naive", "jax.sdpa"], "keras-jax": ["keras.ops.jax"],
                  "keras-torch": ["keras.ops.torch"]}


def require_family(family: str) -> None:
    """Skip the calling test when the family's frameworks are not installed."""
    missing = [m for m in FAMILY_NEEDS[family] if not HAVE[m]]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (pip install 'attnbench[jax,keras]')")


def family_kernel_cases(family: str, mode: str) -> list[Case]:
    shapes = FAMILY_KERNEL_CASES if mode == "fwd" else FAMILY_KERNEL_CASES[1:]
    out = []
    for name in FAMILY_KERNELS[family]:
        for (b, h, n, nk, d, causal) in shapes:
            dtypes = ("float64", "float32", "bfloat16") if (n, causal) == (77, True) else ("float32",)
            if mode == "fwd_bwd":
                dtypes = ("float64", "float32") if (n, causal) == (77, True) else ("float32",)
            out += [Case(impl=name, mode=mode, dtype=dtype, batch=b, heads=h, seq_len=n,
                         seq_len_kv=nk, head_dim=d, causal=causal) for dtype in dtypes]
    return out


def family_layer_cases(family: str, mode: str) -> list[Case]:
    """The odd shape (d_model 96, 3 heads) with each mask kind, and one token."""
    if family not in KERAS_BACKEND_LAYERS:
        return []
    impls = KERAS_BACKEND_LAYERS[family]
    masks = MASKS[1:2] + MASKS[3:] if mode == "fwd" else MASKS[3:]
    return (layer_cases(impls, mode, ("float32",), shapes=SHAPES[1:2], masks=masks)
            + layer_cases(impls, mode, ("float32",), shapes=SHAPES[2:], masks=MASKS[:1]))


def family_cases(family: str) -> list[Case]:
    return [c for mode in ("fwd", "fwd_bwd")
            for c in family_kernel_cases(family, mode) + family_layer_cases(family, mode)]


@functools.cache
def family_run(family: str) -> dict:
    """Every case of the family in one child process (its first case of each kind through
    the worker's whole path); shared by the test modules that check them."""
    cases = family_cases(family)
    full = [c for c in cases if c.seq_len in (23, 77) and c.causal and not c.padding
            and c.dtype == "float32"]
    return run_tf_cases(cases, timeout=400, full=full, family=family)


def assert_ok(case, result: dict) -> None:
    assert result["status"] == "ok", f"{case.case_id}: {result['status']}: {result.get('reason')}"
    assert result["out_dtype"] == case.dtype
    assert 0.0 <= result["max_abs_err"] <= result["tolerance"]
    if case.mode == "fwd_bwd":
        assert result["grad_errors"], case.case_id
        assert 0.0 <= result["grad_err_ratio"] <= 1.0
