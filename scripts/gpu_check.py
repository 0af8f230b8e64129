"""The Python steps of scripts/gpu-check.sh, one subcommand each:

  versions OUT.json    Python, the packages that matter on a GPU, torch's CUDA and the devices
  agreement OUT.json   the harness's median of one flash-attention call against
                       triton.testing.do_bench's median of the same call, and their ratio
  reports RUN_DIR...   each run's scaling.json (where a run cut short has none) and its
                       report.html and report.md

A missing optional package is written down as unsupported with the reason (exit 0); a step that
fails raises (the shell script logs it and goes on); the harness's median stays where do_bench
fails after it. (Each run measures the machine's peaks into its env.json.)
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "triton", "jax", "jaxlib", "xformers", "tensorflow", "tensorflow-cpu",
            "keras", "numpy", "scipy")
# The agreement case: one long flash-attention forward, milliseconds per call
AGREEMENT_CASE = dict(impl="torch.sdpa.flash", level="kernel", mode="fwd", device="cuda",
                      dtype="bfloat16", batch=4, heads=16, seq_len=4096, head_dim=128)
AGREEMENT_TIMING = dict(warmup_s=0.2, min_samples=10, max_samples=500, target_ci=0.01,
                        budget_s=1.0)


def write_json(path: str | Path, data: dict) -> None:
    Path(path).write_text(json.dumps(data, indent=2, default=str) + "\n")


def package_versions() -> dict[str, str | None]:
    """Installed versions (None: not installed), with any JAX CUDA plugin that is present."""
    names = list(PACKAGES) + sorted({d.metadata["Name"] for d in metadata.distributions()
                                     if (d.metadata["Name"] or "").lower().startswith("jax-cuda")})
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def versions() -> dict:
    data = {"python": sys.version.split()[0], "platform": platform.platform(),
            "packages": package_versions()}
    try:
        import torch
    except ImportError as exc:
        return {**data, "torch_cuda": None, "reason": f"torch cannot be imported: {exc}"}
    from harness.measure.cuda import flush_bytes, l2_bytes

    data.update(torch_cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                cuda_available=torch.cuda.is_available(), devices=[])
    for index in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        props = torch.cuda.get_device_properties(index)
        data["devices"].append({"index": index, "name": props.name,
                                "capability": f"{props.major}.{props.minor}",
                                "total_memory_bytes": props.total_memory,
                                "l2_bytes": l2_bytes(props),
                                "flush_bytes": flush_bytes(l2_bytes(props))})
    return data


def agreement_record(harness: dict, do_bench_ms: float | None, case_id: str,
                     do_bench_error: str | None = None) -> dict:
    """Both medians in seconds and harness / do_bench: 1.0 means they agree exactly. Where
    do_bench failed, the harness's median stays, with do_bench's error beside it."""
    record = {"case": case_id, "status": "ok",
              "harness": {k: harness[k] for k in ("median_s", "ci_low_s", "ci_high_s",
                                                   "n_samples", "calls_per_sample", "timer")}}
    if do_bench_ms is None:
        return {**record, "status": "do_bench failed",
                "do_bench": {"error": do_bench_error}, "ratio": None}
    bench_s = do_bench_ms / 1e3
    return {**record, "do_bench": {"median_s": bench_s, "return_mode": "median"},
            "ratio": harness["median_s"] / bench_s if bench_s > 0 else None}


def agreement() -> dict:
    """The same prepared call, timed by the harness's loop (the clock a run gives it) and by
    triton.testing.do_bench. Numerics are not checked here (the run checks them): this
    compares two clocks, so it skips the float64 reference and its minutes of CPU work."""
    from harness import registry
    from harness.problem.inputs import kernel_inputs
    from harness.run.execute import compiled_timer
    from harness.spec import Case, TimingSettings

    case = Case(**AGREEMENT_CASE)
    try:
        from triton.testing import do_bench
    except ImportError as exc:
        return {"case": case.case_id, "status": "unsupported",
                "reason": f"triton not installed ({exc}): pip install triton"}
    adapter = registry.get(case.impl)
    reasons = adapter.unsupported(case)
    if reasons:
        return {"case": case.case_id, "status": "unsupported", "reason": "; ".join(reasons)}
    prepared = adapter.prepare(case, kernel_inputs(case))
    try:
        timer = compiled_timer(case, prepared, TimingSettings(**AGREEMENT_TIMING),
                               adapter.framework)
        timer.first_call()
        harness = timer.measure().to_record()
        timer.release()
        try:
            return agreement_record(harness, float(do_bench(prepared.call, return_mode="median")),
                                    case.case_id)
        except Exception as exc:  # noqa: BLE001 — the harness's median is measured: keep it
            return agreement_record(harness, None, case.case_id,
                                    f"{type(exc).__name__}: {exc}".splitlines()[0])
    finally:
        prepared.close()


def scaling(run_dir: str) -> Path:
    """RUN_DIR/scaling.json, as `attnbench run` writes it at its end, if it is not there."""
    from harness.analysis.scaling import SCALING, write_scaling
    from harness.store import load_records

    path = Path(run_dir) / SCALING
    return path if path.exists() else write_scaling(run_dir, load_records(run_dir))


def reports(run_dirs: list[str]) -> int:
    """Each run's scaling.json and reports, in one process (the imports once); a run whose
    reports fail is named with why, and the others are still written. 1 when one failed."""
    from harness.report import write_reports

    failed = 0
    for run_dir in run_dirs:
        try:
            for path in (scaling(run_dir), *write_reports(run_dir)):
                print(f"wrote {path}")
        except Exception as exc:  # noqa: BLE001 — the other runs' reports are still worth having
            print(f"{run_dir}: no reports ({type(exc).__name__}: {exc})", file=sys.stderr)
            failed = 1
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu_check.py", description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("versions", "agreement", "reports"))
    parser.add_argument("paths", nargs="+", metavar="path",
                        help="the JSON file to write (reports: the run directories)")
    args = parser.parse_args(argv)
    if args.step == "reports":
        return reports(args.paths)
    if len(args.paths) != 1:
        parser.error(f"{args.step} writes one JSON file, got {len(args.paths)} paths")
    data = {"versions": versions, "agreement": agreement}[args.step]()
    write_json(args.paths[0], data)
    print(json.dumps(data, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
