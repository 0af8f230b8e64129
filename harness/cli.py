"""`attnbench list | run | report`: the command line. User mistakes get one line and exit code 2."""
from __future__ import annotations

import argparse
import fnmatch
import os
import shutil
import sys
from datetime import datetime
from pathlib import Path

from harness.spec import DTYPES, SuiteError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
RESULTS_DIR = Path("results")


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + error
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


# ---- argument helpers -----------------------------------------------------------------

def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for group in values or [] for v in group.split(",") if v.strip()]


def _ints(option: str, values: list[str] | None) -> list[int]:
    out = []
    for v in _split(values):
        if not v.isdigit() or int(v) <= 0:
            raise UsageError(f"{option}: expected positive integers separated by commas, got {v!r}")
        out.append(int(v))
    return out


def _bools(option: str, values: list[str] | None) -> list[bool]:
    words = {"true": True, "on": True, "yes": True, "1": True, "causal": True,
             "false": False, "off": False, "no": False, "0": False, "full": False}
    out = []
    for v in _split(values):
        if v.lower() not in words:
            raise UsageError(f"{option}: expected true or false, got {v!r}")
        out.append(words[v.lower()])
    return out


def filter_cases(cases, args, known_impls: set[str]):
    """Narrow the suite's cases by the --impl/--seq-len/--dtype/--device/--causal filters."""
    impls = _split(args.impl)
    for pattern in impls:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in known_impls):
            raise UsageError(f"--impl: no implementation matches {pattern!r}: expected one of "
                             f"{', '.join(sorted(known_impls))}")
    dtypes = _split(args.dtype)
    for d in dtypes:
        if d not in DTYPES:
            raise UsageError(f"--dtype: unknown dtype {d!r}: expected one of {', '.join(DTYPES)}")
    seq_lens = _ints("--seq-len", args.seq_len)
    devices = _split(args.device)
    causal = _bools("--causal", args.causal)
    kept = [c for c in cases
            if (not impls or any(fnmatch.fnmatchcase(c.impl, p) for p in impls))
            and (not seq_lens or c.seq_len in seq_lens)
            and (not dtypes or c.dtype in dtypes)
            and (not devices or c.device in devices)
            and (not causal or c.causal in causal)]
    if not kept:
        raise UsageError("the filters leave no case of the suite to run (suite has seq_len "
                         f"{sorted({c.seq_len for c in cases})}, dtype {sorted({c.dtype for c in cases})}, "
                         f"device {sorted({c.device for c in cases})})")
    return kept


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


# ---- commands -------------------------------------------------------------------------

def _static_availability(adapter, devices: list[str]) -> tuple[list[str], str]:
    """(devices it can use here, a status line) from what is installed, without imports."""
    missing = adapter.missing_packages()
    usable = [d for d in adapter.devices if d in devices]
    if missing:
        return [], f"no: {', '.join(missing)} not installed ({adapter.install_hint})"
    if not usable:
        return [], f"no: runs on {', '.join(adapter.devices)}; none on this machine"
    return usable, f"installed ({', '.join(usable)})"


def _probe_all(adapters, devices: list[str]) -> dict[str, str]:
    """Ask each library, in its own worker, whether it runs a typical float32 case here."""
    from harness.runner import Worker, WorkerGone
    from harness.spec import Case
    from harness.store import physical_cores

    verdicts = {}
    by_family: dict[str, list] = {}
    for adapter in adapters:
        usable, _ = _static_availability(adapter, devices)
        if usable:
            by_family.setdefault(adapter.framework, []).append((adapter, usable))
    for family, members in by_family.items():
        try:
            worker = Worker(family, physical_cores(), os.devnull)
        except WorkerGone as gone:
            verdicts.update({a.name: f"no: {gone.reason}" for a, _ in members})
            continue
        for adapter, usable in members:
            dtype = "float32" if "float32" in adapter.dtypes else adapter.dtypes[0]
            answers = {d: worker.probe(Case(impl=adapter.name, level=adapter.level, device=d,
                                            dtype=dtype, seq_len=128, head_dim=64)) for d in usable}
            ok = [d for d, reasons in answers.items() if not reasons]
            verdicts[adapter.name] = (f"yes ({', '.join(ok)})" if ok else
                                      "no: " + "; ".join(r for rs in answers.values() for r in rs))
        worker.stop()
    return verdicts


def cmd_list(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from harness import registry
    from harness.devices import available_devices

    console = Console()
    if not console.is_terminal:
        console.width = 160
    devices = available_devices()
    adapters = [a for _, a in sorted(registry.adapters().items())]
    probed = _probe_all(adapters, devices) if args.probe else {}
    title = f"attnbench implementations (devices here: {', '.join(devices)})"
    table = Table(title=title, title_justify="left")
    table.add_column("name", no_wrap=True)
    for column in ("framework", "level", "devices", "dtypes"):
        table.add_column(column)
    table.add_column("checked with the library (float32, N=128, D=64)" if args.probe
                     else "available here (--probe asks the library)", overflow="fold")
    for adapter in adapters:
        _, status = _static_availability(adapter, devices)
        status = probed.get(adapter.name, status)
        style = "green" if status.startswith(("yes", "installed")) else "yellow"
        table.add_row(adapter.name, adapter.framework, adapter.level, ", ".join(adapter.devices),
                      ", ".join(adapter.dtypes), f"[{style}]{status}[/]")
    console.print(table)
    return EXIT_OK


def _default_out(suite_name: str) -> Path:
    return RESULTS_DIR / f"{suite_name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _latest_run(suite_name: str) -> Path | None:
    runs = sorted(RESULTS_DIR.glob(f"{suite_name}-*/results.jsonl"))
    return runs[-1].parent if runs else None


def _run_settings(suite, args):
    """The suite's timing with the command line's overrides, and the memory cap in bytes."""
    import dataclasses

    overrides = {k: v for k, v in (("budget_s", args.budget), ("timeout_s", args.timeout),
                                   ("target_ci", args.target_ci)) if v is not None}
    settings = dataclasses.replace(suite.timing, **overrides)
    mem_limit = None
    if args.mem_limit:
        from harness.limits import parse_size
        try:
            mem_limit = parse_size(args.mem_limit)
        except ValueError as exc:
            raise UsageError(f"--mem-limit: {exc}") from None
    return settings, mem_limit


def _out_dir(suite, args) -> Path:
    if args.out:
        return Path(args.out)
    if args.resume:
        out = _latest_run(suite.name)
        if out is None:
            raise UsageError(f"--resume: no earlier run of suite {suite.name!r} under "
                             f"{RESULTS_DIR}/; pass --out DIR")
        return out
    return _default_out(suite.name)


def cmd_run(args) -> int:
    from harness import registry, scaling
    from harness.progress import RunDisplay
    from harness.runner import Runner
    from harness.spec import load_suite
    from harness.store import FAILED_STATUSES, RunDir, capture_env, now_iso, physical_cores

    known = {name: adapter.level for name, adapter in registry.adapters().items()}
    suite = load_suite(args.suite, known)
    cases = filter_cases(suite.cases(), args, known)
    settings, mem_limit = _run_settings(suite, args)
    threads = args.threads or physical_cores()
    out = _out_dir(suite, args)
    run_dir = RunDir(out)
    done = run_dir.recorded_ids() if run_dir.results_path.exists() else set()
    if done and not args.resume:
        raise UsageError(f"--out: {out} already holds {len(done)} records; pass --resume to "
                         "finish that run, or choose another directory")
    todo = [c for c in cases if c.case_id not in done]

    run_dir.path.mkdir(parents=True, exist_ok=True)
    env = run_dir.read_env() or capture_env(threads, suite.name)
    if suite.path and not (run_dir.path / "suite.toml").exists():
        shutil.copyfile(suite.path, run_dir.path / "suite.toml")
    if done:
        env.setdefault("resumed_at", []).append(now_iso())
    if mem_limit:
        env["mem_limit_bytes"] = mem_limit
    run_dir.write_env(env)

    def on_worker(family, info):
        env["workers"][family] = info
        run_dir.write_env(env)

    display = RunDisplay(total=len(cases), already=len(cases) - len(todo), quiet=args.quiet)
    display.header(suite, out, len(todo), threads)
    runner = Runner(run_dir, settings, threads, mem_limit=mem_limit, peaks=env.get("peaks"),
                    on_start=display.start, on_record=display.record, on_worker=on_worker)
    try:
        if "peaks" not in env and todo:
            display.note("measuring this machine's matmul and bandwidth peaks")
            env["peaks"] = runner.measure_peaks(todo)
            run_dir.write_env(env)
        with display:
            runner.run(todo)
    except KeyboardInterrupt:
        display.console.print(
            f"[yellow]interrupted[/]: {len(run_dir.recorded_ids())} of {len(cases)} cases recorded "
            f"in {out}/results.jsonl; finish with: attnbench run {args.suite or 'default'} "
            f"--out {out} --resume")
        return EXIT_INTERRUPTED

    wanted = {c.case_id for c in cases}
    records = [r for r in run_dir.records() if r["case_id"] in wanted]
    scaling.write_scaling(out, records)
    display.summary(records, out, scaling.fits(records),
                    scaling.crossovers(records, min_ratio=scaling.CROSSOVER_MARGIN))
    if not args.no_report:
        from harness.report import write_reports
        for path in write_reports(out):
            display.console.print(f"report: {path}")
    return EXIT_FAILED if any(r["status"] in FAILED_STATUSES for r in records) else EXIT_OK


def cmd_report(args) -> int:
    from harness.report import write_reports

    run_dir = Path(args.run_dir)
    if not (run_dir / "results.jsonl").is_file():
        raise UsageError(f"{run_dir}: not a run directory (no results.jsonl): expected the "
                         "directory `attnbench run` printed")
    for path in write_reports(run_dir):
        print(f"wrote {path}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="attnbench", description="Benchmark attention implementations: latency, "
                     "accuracy against float64, across shapes, dtypes, masks and devices.")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, required=True)

    p_list = sub.add_parser("list", help="show every implementation and whether it runs here")
    p_list.add_argument("--probe", action="store_true",
                        help="ask each library in a worker process (slower, exact)")
    p_list.set_defaults(func=cmd_list)

    p_run = sub.add_parser("run", help="run a suite (default: suites/default.toml)")
    p_run.add_argument("suite", nargs="?", help="suite file or built-in name (default, smoke, ...)")
    p_run.add_argument("--out", help="run directory (default: results/<suite>-<timestamp>)")
    p_run.add_argument("--resume", action="store_true",
                       help="run only the cases that have no record in --out (or the latest run)")
    p_run.add_argument("--impl", action="append", help="implementations to keep (comma list, globs)")
    p_run.add_argument("--seq-len", action="append", help="seq_len values to keep (comma list)")
    p_run.add_argument("--dtype", action="append", help="dtypes to keep (comma list)")
    p_run.add_argument("--device", action="append", help="devices to keep (comma list)")
    p_run.add_argument("--causal", action="append", help="keep causal (true) or full (false) cases")
    p_run.add_argument("--threads", type=_positive_int,
                       help="intra-op threads for every framework (default: physical cores)")
    p_run.add_argument("--budget", type=_positive_float, help="sampling seconds per case")
    p_run.add_argument("--timeout", type=_positive_float, help="seconds before a case is killed")
    p_run.add_argument("--target-ci", type=_positive_float,
                       help="stop sampling when the median's 95%% CI is within ± this fraction")
    p_run.add_argument("--mem-limit", metavar="SIZE",
                       help="cap what one case may allocate (e.g. 512MiB, 2GiB); beyond it the "
                            "case is recorded as oom and larger seq_len of its configuration skipped")
    p_run.add_argument("--quiet", action="store_true", help="no progress output")
    p_run.add_argument("--no-report", action="store_true", help="do not write report.md at the end")
    p_run.set_defaults(func=cmd_run)

    p_report = sub.add_parser("report", help="write RUN_DIR/report.md from a run directory")
    p_report.add_argument("run_dir", help="a directory written by `attnbench run`")
    p_report.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except (UsageError, SuiteError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
