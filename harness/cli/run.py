"""`attnbench run` and `attnbench report`."""
from __future__ import annotations

import dataclasses
import shutil
from datetime import datetime
from pathlib import Path

from harness import values
from harness.cli.args import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, RESULTS_DIR, UsageError,
                              add_filter_options, add_timing_options, arg, filter_cases,
                              filters_of, make_dir, output_dir, split_values, timing_overrides)
from harness.constants import FAILED_STATUSES
from harness.spec import TIMING_KEYS


def _default_out(suite_name: str) -> Path:
    return RESULTS_DIR / f"{suite_name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _latest_run(suite_name: str) -> Path | None:
    runs = sorted(RESULTS_DIR.glob(f"{suite_name}-*/results.jsonl"))
    return runs[-1].parent if runs else None


def _mem_limit(args) -> int | None:
    if args.mem_limit is None:
        return None
    try:
        return values.SIZE.from_text(args.mem_limit, "--mem-limit")
    except values.BadValue as exc:
        raise UsageError(str(exc)) from None


def _executor_choice(args) -> tuple[str, dict]:
    """--executor and its options, checked before anything runs (nothing is started here)."""
    from harness.run.dask_executor import SCHEDULER
    from harness.run.executors import EXECUTORS

    try:
        name = values.one_of(tuple(EXECUTORS)).from_text(args.executor, "--executor")
        scheduler = args.scheduler and SCHEDULER.from_text(args.scheduler, "--scheduler")
    except values.BadValue as exc:
        raise UsageError(str(exc)) from None
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
    if args.out is not None:
        return output_dir(args.out)
    if args.resume:
        out = _latest_run(suite.name)
        if out is None:
            raise UsageError(f"--resume: no earlier run of suite {suite.name!r} under "
                             f"{RESULTS_DIR}/; pass --out DIR")
        return out
    return _default_out(suite.name)


def make_plan(args):
    """The run this command asks for, as data: suite, filters, overrides, settings, cases."""
    from harness import registry
    from harness.spec import load_suite, timing_settings
    from harness.store import Plan, now_iso, physical_cores

    known = {name: adapter.level for name, adapter in registry.adapters().items()}
    suite = load_suite(args.suite, known)
    filters = filters_of(args, known)
    cases = filter_cases(suite.cases(), filters)
    overrides = timing_overrides(args)
    timing = timing_settings(overrides, suite.timing)
    if timing.cuda_graphs:
        _check_graphs(cases, "--cuda-graphs" if overrides.get("cuda_graphs")
                      else f"{suite.path}: key 'timing.cuda_graphs'")
    mem_limit = _mem_limit(args)
    threads = args.threads or physical_cores()
    overrides.update(threads=threads, **({"mem_limit_bytes": mem_limit} if mem_limit else {}))
    return suite, Plan(suite=suite.name, suite_path=str(suite.path) if suite.path else None,
                       filters=filters, overrides=overrides, timing=timing, cases=tuple(cases),
                       created_at=now_iso(), extra={"suite_arg": args.suite or suite.name})


def _check_graphs(cases, where: str) -> None:
    """CUDA-graph replay is for torch on CUDA: any other planned case is refused up front."""
    from harness import registry
    from harness.measure.clocks import graph_refusal

    adapters = registry.adapters()
    refused = [why for why in (graph_refusal(c, adapters[c.impl].framework) for c in cases) if why]
    if refused:
        raise UsageError(f"{where}: {len(refused)} of {len(cases)} planned cases cannot be "
                         f"replayed as CUDA graphs ({refused[0]}); keep to torch "
                         "implementations on CUDA, e.g. --device cuda --impl 'torch.*'")


def _explicit_settings(args, plan) -> dict:
    """The settings this command line sets itself (not the suite's or the defaults)."""
    given = dict(timing_overrides(args))
    if args.threads:
        given["threads"] = args.threads
    if args.mem_limit is not None:
        given["mem_limit_bytes"] = plan.overrides["mem_limit_bytes"]
    return given


def _resumed_plan(run_dir, plan, args):
    """The plan a resumed run keeps: its own. Another suite, filters or settings than the ones
    it was planned with make another run; none given mean "the run as it was planned"."""
    from harness.store import PlanError, read_plan

    try:
        earlier = read_plan(run_dir.path)
    except PlanError as exc:
        raise UsageError(f"--resume: {exc}") from None
    if earlier is None:
        return plan
    if not plan.filters:
        plan = dataclasses.replace(plan, filters=earlier.filters,
                                   cases=tuple(c for c in plan.cases
                                               if c.case_id in set(earlier.case_ids)))
    differs = earlier.differences(plan)
    planned = {**dataclasses.asdict(earlier.timing), **earlier.overrides}
    differs += [f"{key} {planned.get(key)!r} vs {value!r}"
                for key, value in _explicit_settings(args, plan).items()
                if planned.get(key) != value]
    if differs:
        raise UsageError(f"--resume: {run_dir.path} was planned for another run ("
                         f"{'; '.join(differs)}); resume it with the same suite, filters and "
                         "settings (or none), or choose another --out")
    return earlier


def cmd_run(args) -> int:
    from harness.analysis import scaling
    from harness.cli.console import styled
    from harness.cli.display import RunDisplay
    from harness.run.runner import Runner, finished, repeats_of
    from harness.store import RunDir, capture_env, now_iso, write_plan

    suite, plan = make_plan(args)
    choice = _executor_choice(args)
    out = _out_dir(suite, args)
    run_dir = RunDir(out)
    earlier = {r["case_id"]: r for r in run_dir.records()}
    if earlier and not args.resume:
        raise UsageError(f"--out: {out} already holds {len(earlier)} records; pass --resume to "
                         "finish that run, or choose another directory")
    if args.resume:
        plan = _resumed_plan(run_dir, plan, args)
    cases = list(plan.cases)
    done = {i for i, r in earlier.items() if finished(r, plan.timing.repeats)}
    todo = [c for c in cases if c.case_id not in done]
    threads, mem_limit = plan.overrides["threads"], plan.overrides.get("mem_limit_bytes")
    if args.dry_run:
        for case in todo:
            print(case.case_id)
        print(f"{len(todo)} of {len(cases)} planned cases to run, {threads} threads -> {out} "
              "(dry run: nothing was measured or written)")
        return EXIT_OK

    executor = _executor(choice) if todo else None  # before anything is written
    make_dir(run_dir.path)
    write_plan(run_dir.path, plan)
    env = run_dir.read_env() or capture_env(threads, suite.name)
    if executor:
        env.setdefault("executors", []).append({**executor.describe(), "at": now_iso()})
    if suite.path and not (run_dir.path / "suite.toml").exists():
        shutil.copyfile(suite.path, run_dir.path / "suite.toml")
    if earlier:
        env.setdefault("resumed_at", []).append(now_iso())
    if mem_limit:
        env["mem_limit_bytes"] = mem_limit
    run_dir.write_env(env)

    def on_worker(family, info):
        env["workers"][family] = info
        run_dir.write_env(env)

    def on_host(host, entry):
        env.setdefault("hosts", {})[host] = entry
        run_dir.write_env(env)

    repeats = plan.timing.repeats
    measured = sum(repeats if finished(r, repeats) else repeats_of(r) for r in earlier.values())
    display = RunDisplay(total=len(cases) * repeats, already=measured, quiet=args.quiet)
    display.header(suite, out, len(todo), threads, repeats)
    runner = Runner(run_dir, plan.timing, threads, mem_limit=mem_limit, peaks=env.get("peaks"),
                    on_start=display.start, on_record=display.record, on_worker=on_worker,
                    executor=executor, hosts=env.get("hosts"), on_host=on_host)
    if executor and executor.name != "local":
        display.note(f"executor {executor.name}: {len(env['executors'][-1].get('workers', {}))} "
                     f"workers at {env['executors'][-1].get('scheduler')}")
    try:
        if "peaks" not in env and todo:
            display.note("measuring this machine's matmul and bandwidth peaks")
            env["peaks"] = runner.measure_peaks(todo)
            run_dir.write_env(env)
        with display:
            runner.run(todo, earlier={c.case_id: earlier[c.case_id] for c in todo
                                      if c.case_id in earlier})
    except KeyboardInterrupt:
        runner.close(abandon=True)  # outstanding cases cancelled; what is recorded stays
        display.console.print(styled(
            ("interrupted", "yellow"), f": {len(run_dir.recorded_ids())} of {len(cases)} cases "
            f"recorded in {out}/results.jsonl; finish with: attnbench run "
            f"{plan.extra['suite_arg']} --out {out} --resume"))
        return EXIT_INTERRUPTED
    finally:
        runner.close()

    wanted = set(plan.case_ids)
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
    from harness.report import FORMATS, write_reports

    run_dir = Path(args.run_dir)
    if not (run_dir / "results.jsonl").is_file():
        raise UsageError(f"{run_dir}: not a run directory (no results.jsonl): expected the "
                         "directory `attnbench run` printed")
    formats = split_values(args.format) or list(FORMATS)
    for fmt in formats:
        if fmt not in FORMATS:
            raise UsageError(f"--format: unknown format {fmt!r}: expected {' or '.join(FORMATS)} "
                             "(comma list)")
    for path in write_reports(run_dir, formats, baseline=args.baseline):
        print(f"wrote {path}")
    return EXIT_OK


def add_parsers(sub) -> None:
    p_run = sub.add_parser("run", help="run a suite (default: suites/default.toml)")
    p_run.add_argument("suite", nargs="?", help="suite file or built-in name (default, smoke, ...)")
    p_run.add_argument("--out", help="run directory (default: results/<suite>-<timestamp>)")
    p_run.add_argument("--resume", action="store_true",
                       help="run only the planned cases that have no record in --out (or the "
                            "latest run of the suite)")
    add_filter_options(p_run, with_mode=True)
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
