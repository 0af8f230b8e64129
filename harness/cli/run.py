"""`attnbench run` and `attnbench report`."""
from __future__ import annotations

import sys
from pathlib import Path

from harness import values
from harness.cli.args import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, UsageError,
                              add_filter_options, add_function_option, add_timing_options, arg,
                              output_dir, request_of, use_functions)
from harness.spec import TIMING_KEYS


def _executor_choice(args) -> tuple[str, dict]:
    """--executor and its options, checked before anything runs (nothing is started here)."""
    from harness.run.dask_executor import SCHEDULER
    from harness.run.executors import EXECUTORS

    name = values.one_of(tuple(EXECUTORS)).from_text(args.executor, "--executor")
    scheduler = args.scheduler and SCHEDULER.from_text(args.scheduler, "--scheduler")
    if name == "local":
        for option, given in (("--workers", args.workers), ("--scheduler", scheduler)):
            if given:
                raise UsageError(f"{option}: only with --executor dask (the local executor "
                                 "runs every case in this process's workers)")
        return name, {}
    if bool(args.workers) == bool(scheduler):
        raise UsageError("--executor dask: expected either --workers N (a cluster on this "
                         "machine) or --scheduler tcp://HOST:PORT (a running one), not "
                         f"{'both' if scheduler else 'neither'}")
    return name, {"workers": args.workers, "scheduler": scheduler}


def _executor(choice: tuple[str, dict]):
    from harness.run.executor import ExecutorError
    from harness.run.executors import make_executor

    try:
        return make_executor(choice[0], **choice[1])
    except ExecutorError as exc:
        raise UsageError(str(exc)) from None


def _out_dir(suite, args) -> Path:
    from harness.store.rundir import RESULTS_ROOT, latest, timestamped

    if args.out is not None:
        return output_dir(args.out)
    if args.resume:
        out = latest(suite.name)
        if out is None:
            raise UsageError(f"--resume: no earlier run of suite {suite.name!r} under "
                             f"{RESULTS_ROOT}/; pass --out DIR")
        return out
    return timestamped(suite.name)


def _dry_run(todo: list, plan, out: Path) -> int:
    for case in todo:
        print(case.case_id)
    print(f"{len(todo)} of {len(plan.cases)} planned cases to run, {plan.overrides['threads']} "
          f"threads -> {out} (dry run: nothing was measured or written)")
    return EXIT_OK


def _function_options(plan) -> str:
    """` --fn MODULE:FUNCTION` for each function the plan runs: a resume must load them too."""
    from harness.spec import function_path

    functions = sorted(filter(None, {function_path(c.impl) for c in plan.cases}))
    return "".join(f" --fn {f}" for f in functions)


def _interrupted(display, run_dir, plan) -> int:
    from harness.cli.console import styled

    display.console.print(styled(
        ("interrupted", "yellow"), f": {len(run_dir.recorded_ids())} of {len(plan.cases)} cases "
        f"recorded in {run_dir.path}/results.jsonl; finish with: attnbench run "
        f"{plan.extra['suite_arg']}{_function_options(plan)} --out {run_dir.path} --resume"))
    return EXIT_INTERRUPTED


def cmd_run(args) -> int:
    from harness import registry
    from harness.cli.display import RunDisplay
    from harness.report.finish import finish_run
    from harness.run.runner import finished
    from harness.run.session import measure_plan
    from harness.store import RunDir, make_plan, now_iso, resume_plan

    use_functions(args)
    request = request_of(args)
    suite, plan = make_plan(request, registry.adapters())
    choice = _executor_choice(args)
    run_dir = RunDir(_out_dir(suite, args))
    if not args.resume:
        run_dir.refuse_if_held("pass --resume to finish that run, or ")
    earlier = {r["case_id"]: r for r in run_dir.records()}
    plan = resume_plan(run_dir.path, plan, request) if args.resume else plan
    repeats = plan.timing.repeats
    todo = [c for c in plan.cases
            if c.case_id not in earlier or not finished(earlier[c.case_id], repeats)]
    if args.dry_run:
        return _dry_run(todo, plan, run_dir.path)
    executor = _executor(choice) if todo else None  # before anything is written
    run_dir.start(plan, suite_path=suite.path, resumed_at=[now_iso()] if earlier else None,
                  executors=[{**executor.describe(), "at": now_iso()}] if executor else None,
                  mem_limit_bytes=plan.overrides.get("mem_limit_bytes"))
    planned = {c.case_id for c in plan.cases}
    display = RunDisplay(len(plan.cases), repeats, quiet=args.quiet,
                         earlier={i: r for i, r in earlier.items() if i in planned})
    display.header(suite, run_dir.path, len(todo), plan.overrides["threads"])
    try:
        measure_plan(run_dir, plan, todo, earlier, executor, display)
    except KeyboardInterrupt:
        return _interrupted(display, run_dir, plan)
    done = finish_run(run_dir, plan, reports=not args.no_report)
    display.summary(done, run_dir.path, verbose=args.verbose)
    return EXIT_FAILED if done.failed else EXIT_OK


def cmd_report(args) -> int:
    import warnings

    from harness.report import FORMATS, write_reports
    from harness.store import DamagedLineWarning, require_run_dir
    from harness.store.plan import split_values

    run_dir = require_run_dir(args.run_dir)
    formats = split_values(args.format) or list(FORMATS)
    for fmt in formats:
        if fmt not in FORMATS:
            raise UsageError(f"--format: unknown format {fmt!r}: expected {' or '.join(FORMATS)} "
                             "(comma list)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        written = write_reports(run_dir, formats, baseline=args.baseline)
    damaged = [str(w.message) for w in caught if issubclass(w.category, DamagedLineWarning)]
    for w in caught:  # the others as every command shows them
        if not issubclass(w.category, DamagedLineWarning):
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    warning = _damage_warning(Path(run_dir) / "results.jsonl", damaged)
    if warning:
        print(warning, file=sys.stderr)
    for path in written:
        print(f"wrote {path}")
    return EXIT_OK


def _damage_warning(results: Path, damaged: list[str]) -> str | None:
    """One line for the results lines the report had to skip: the first damaged one, how many
    more, and a last line cut off mid-write (a killed run), which the loader skips silently."""
    try:
        data = results.read_bytes()
    except OSError:
        data = b""
    cut = bool(data) and not data.endswith(b"\n")
    if not damaged and not cut:
        return None
    text = damaged[0] if damaged else (f"{results}: the last line was cut off mid-write (an "
                                       "interrupted run) and skipped")
    if len(damaged) > 1:
        text += f" (and {len(damaged) - 1} more damaged lines)"
    if damaged and cut:
        text += "; the last line was cut off mid-write too"
    return f"warning: {text}; the report leaves them out"


def add_parsers(sub) -> None:
    p_run = sub.add_parser("run", help="run a suite (default: suites/default.toml)")
    p_run.add_argument("suite", nargs="?", help="suite file or built-in name (default, smoke, ...)")
    p_run.add_argument("--out", help="run directory (default: results/<suite>-<timestamp>)")
    p_run.add_argument("--resume", action="store_true",
                       help="run only the planned cases that have no record in --out (or the "
                            "latest run of the suite)")
    add_filter_options(p_run, with_mode=True)
    add_function_option(p_run)
    add_timing_options(p_run)
    p_run.add_argument("--cuda-graphs", action="store_true", default=None,
                       help="capture each case's call once as a CUDA graph and time its "
                            "replays with CUDA events (torch implementations on CUDA only; "
                            "default: the suite's timing.cuda_graphs, else off)")
    p_run.add_argument("--repeats", type=arg(TIMING_KEYS["repeats"]),
                       help="measure each case in this many fresh worker processes, in passes "
                            "over the suite; the interval then includes process-to-process "
                            "variance (default: the suite's timing.repeats, else 1)")
    p_run.add_argument("--mem-limit", metavar="SIZE",
                       help="cap what one case may allocate (e.g. 512MiB, 2GiB); beyond it the "
                            "case is recorded as oom and larger seq_len of its configuration skipped")
    p_run.add_argument("--executor", default="local",
                       help="where the cases run: local (default: here, one at a time) or dask "
                            "(a Dask cluster: with --workers or --scheduler)")
    p_run.add_argument("--workers", type=arg(values.COUNT), metavar="N",
                       help="--executor dask: start a cluster of N workers on this machine "
                            "(127.0.0.1 only; one GPU each while there are GPUs)")
    p_run.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                       help="--executor dask: use the running Dask cluster at this scheduler")
    p_run.add_argument("--quiet", action="store_true", help="no progress output")
    p_run.add_argument("--verbose", action="store_true",
                       help="also print the full latency, bandwidth, compile-time and scaling "
                            "tables at the end (the report always has them)")
    p_run.add_argument("--dry-run", action="store_true",
                       help="check the suite and options and list the cases that would run; "
                            "measure and write nothing")
    p_run.add_argument("--no-report", action="store_true",
                       help="do not write report.html and report.md at the end")
    p_run.set_defaults(func=cmd_run)

    p_report = sub.add_parser("report", help="write RUN_DIR/report.html and report.md from a "
                              "run directory")
    p_report.add_argument("run_dir", help="a directory written by `attnbench run`")
    p_report.add_argument("--format", action="append",
                          help="html, md or both as a comma list (default: html,md)")
    p_report.add_argument("--baseline", default="torch.naive", metavar="IMPL",
                          help="implementation the speedups are relative to (default: torch.naive)")
    p_report.set_defaults(func=cmd_report)
