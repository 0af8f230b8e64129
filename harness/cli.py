"""`attnbench list | run | report | compare | ab | baseline | profile`: the command line.

User mistakes get one line and exit code 2."""
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
    from harness.report import FORMATS, write_reports

    run_dir = Path(args.run_dir)
    if not (run_dir / "results.jsonl").is_file():
        raise UsageError(f"{run_dir}: not a run directory (no results.jsonl): expected the "
                         "directory `attnbench run` printed")
    formats = _split(args.format) or list(FORMATS)
    for fmt in formats:
        if fmt not in FORMATS:
            raise UsageError(f"--format: unknown format {fmt!r}: expected {' or '.join(FORMATS)} "
                             "(comma list)")
    for path in write_reports(run_dir, formats, baseline=args.baseline):
        print(f"wrote {path}")
    return EXIT_OK


# ---- regression gate: compare, ab, baseline ------------------------------------------------

def _fraction(text: str) -> float:
    """'5%' or '0.05' -> 0.05."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        value = -1.0
    if not (0 < value < 1) or (not text.endswith("%") and float(text) >= 1):
        raise argparse.ArgumentTypeError(f"expected a percentage like 5% or a fraction like 0.05, "
                                         f"got {text!r}")
    return value


def _write_comparison(result: dict, md_path, json_path, title: str) -> None:
    from harness import compare

    if md_path:
        Path(md_path).write_text(compare.render_markdown(result, title))
    if json_path:
        compare.write_json(result, json_path)
    for line in compare.console_lines(result):
        print(line)
    for what, path in (("markdown", md_path), ("json", json_path)):
        if path:
            print(f"{what}: {path}")


def cmd_compare(args) -> int:
    from harness import baselines, compare

    if args.baseline:
        if len(args.runs) != 1:
            raise UsageError("compare --baseline NAME: expected one run (the new one), got "
                             f"{len(args.runs)}")
        try:
            base = baselines.path_of(args.baseline, args.baselines_dir)
        except baselines.BaselineError as exc:
            raise UsageError(str(exc)) from None
        new = args.runs[0]
    elif len(args.runs) != 2:
        raise UsageError(f"compare: expected BASE_RUN NEW_RUN (or --baseline NAME NEW_RUN), got "
                         f"{len(args.runs)} run(s)")
    else:
        base, new = args.runs
    try:
        result = compare.compare_runs(base, new, args.threshold, args.mem_threshold, args.force)
    except compare.CompareError as exc:
        raise UsageError(str(exc)) from None
    if args.baseline:
        result["baseline"] = args.baseline
    _write_comparison(result, args.md, args.json, "attnbench regression gate")
    return compare.exit_code(result)


def cmd_baseline(args) -> int:
    from harness import baselines

    try:
        if args.action == "save":
            path = baselines.save(args.run_dir, args.name, args.baselines_dir, replace=args.force)
            print(f"saved baseline {args.name!r}: {path} (commit it; compare with: attnbench "
                  f"compare --baseline {args.name} NEW_RUN)")
        else:
            found = baselines.names(args.baselines_dir)
            if not found:
                print(f"no baselines in {args.baselines_dir}/")
            for name in found:
                print(baselines.describe(name, args.baselines_dir))
    except baselines.BaselineError as exc:
        raise UsageError(str(exc)) from None
    return EXIT_OK


def _python(path: str, option: str) -> str:
    found = shutil.which(path) if os.sep not in path else path
    if not found or not os.path.isfile(found) or not os.access(found, os.X_OK):
        raise UsageError(f"{option}: {path!r} is not an executable Python interpreter")
    return found


def _env_pairs(values: list[str] | None, option: str) -> dict[str, str]:
    out = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{option}: expected KEY=VALUE, got {item!r}")
        out[key.strip()] = value
    return out


def _root(path: str | None, option: str) -> Path:
    from harness.ab import ROOT

    if path is None:
        return ROOT
    root = Path(path).resolve()
    if not (root / "harness" / "ab_worker.py").is_file():
        raise UsageError(f"{option}: {path} is not an attnbench checkout with harness/ab_worker.py")
    return root


def cmd_ab(args) -> int:
    from harness import ab, compare, registry, scaling
    from harness.report import write_reports
    from harness.spec import load_suite
    from harness.store import RunDir, physical_cores

    known = set(registry.adapters())
    suite = load_suite(args.suite, known)
    cases = filter_cases(suite.cases(), args, known)
    settings, _ = _run_settings(suite, args)
    settings = ab.ab_settings(settings)
    threads = args.threads or physical_cores()
    specs = {"base": ab.SideSpec("base", _python(args.base_python, "--base-python"),
                                 _env_pairs(args.base_env, "--base-env"),
                                 _root(args.base_root, "--base-root")),
             "head": ab.SideSpec("head", _python(args.head_python, "--head-python"),
                                 _env_pairs(args.head_env, "--head-env"),
                                 _root(args.head_root, "--head-root"))}
    out = Path(args.out) if args.out else RESULTS_DIR / (
        f"ab-{suite.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    for name in specs:
        if (out / name / "results.jsonl").exists():
            raise UsageError(f"--out: {out / name} already holds a run; choose another directory")
    try:
        envs = {name: ab.side_env(spec, threads, suite.name) for name, spec in specs.items()}
    except ab.ABError as exc:
        raise UsageError(str(exc)) from None
    for name, env in envs.items():
        run_dir = RunDir(out / name)
        run_dir.path.mkdir(parents=True, exist_ok=True)
        env["ab"] = {"side": name, "python": specs[name].python, "env": specs[name].env,
                     "root": str(specs[name].root)}
        run_dir.write_env(env)
        if suite.path:
            shutil.copyfile(suite.path, run_dir.path / "suite.toml")

    def show(case, base, head):
        row = compare.judge_case(base, head, args.threshold, args.mem_threshold)
        timing = (f"base {compare.duration(row.get('base_median_s'))}, head "
                  f"{compare.duration(row.get('new_median_s'))}, ratio {compare.ratio_text(row)}"
                  if row.get("ratio") else f"{row['base_status']} / {row['new_status']}")
        print(f"{compare.LABELS.get(row['verdict'], row['verdict']):>15}  {case.case_id}: {timing}",
              flush=True)

    if not args.quiet:
        print(f"attnbench ab suite {suite.name}: {len(cases)} cases, {threads} threads, "
              f"{settings.min_samples}..{settings.max_samples} samples per side -> {out}")
        for name, spec in specs.items():
            extra = " ".join(f"{k}={v}" for k, v in spec.env.items())
            print(f"  {name}: {spec.python} (torch {envs[name]['packages'].get('torch')}) {extra}")
    runner = ab.ABRunner(specs["base"], specs["head"], out, settings, threads,
                         on_record=None if args.quiet else show)
    try:
        result = ab.run_ab(runner, cases, args.threshold, args.mem_threshold,
                           note=(lambda text: None) if args.quiet else print)
    except ab.ABError as exc:
        raise UsageError(str(exc)) from None
    except KeyboardInterrupt:
        print(f"interrupted: partial runs in {out}/base and {out}/head", file=sys.stderr)
        return EXIT_INTERRUPTED
    for name, env in envs.items():
        env["workers"] = runner.infos[name]
        RunDir(out / name).write_env(env)
        scaling.write_scaling(out / name, RunDir(out / name).records())
        write_reports(out / name)
    result.update(base=str(out / "base"), new=str(out / "head"), forced=False,
                  differences=[list(d) for d in compare.fingerprint_differences(
                      envs["base"], envs["head"])])
    _write_comparison(result, out / "compare.md", out / "compare.json", "attnbench A/B")
    return compare.exit_code(result)


def _add_gate_commands(sub) -> None:
    """The regression gate's subcommands: compare, ab, baseline."""
    from harness.baselines import BASELINES_DIR

    p_cmp = sub.add_parser("compare", help="regression gate: compare a new run with a base run "
                                           "or a stored baseline (exit 1 on a regression)")
    p_cmp.add_argument("runs", nargs="+", metavar="RUN",
                       help="BASE_RUN NEW_RUN, or only NEW_RUN with --baseline")
    p_cmp.add_argument("--baseline", metavar="NAME", help="compare with results/baselines/NAME")
    p_cmp.add_argument("--baselines-dir", default=str(BASELINES_DIR), metavar="DIR",
                       help=f"where baselines live (default: {BASELINES_DIR})")
    p_cmp.add_argument("--threshold", type=_fraction, default=0.05,
                       help="smallest slowdown that counts, e.g. 5%% (default 5%%)")
    p_cmp.add_argument("--mem-threshold", type=_fraction, default=0.10,
                       help="smallest peak-memory growth that counts (default 10%%)")
    p_cmp.add_argument("--force", action="store_true",
                       help="compare runs from different machines or software anyway")
    p_cmp.add_argument("--md", metavar="FILE", help="write the Markdown (a PR comment) to FILE")
    p_cmp.add_argument("--json", metavar="FILE", help="write every case's statistics to FILE")
    p_cmp.set_defaults(func=cmd_compare)

    p_ab = sub.add_parser("ab", help="interleaved A/B: the same cases in two Python environments, "
                                     "side by side, then the regression gate")
    p_ab.add_argument("suite", nargs="?", help="suite file or built-in name")
    p_ab.add_argument("--base-python", default=sys.executable, metavar="PATH",
                      help="interpreter of the base side (default: this one)")
    p_ab.add_argument("--head-python", default=sys.executable, metavar="PATH",
                      help="interpreter of the head side (default: this one)")
    p_ab.add_argument("--base-env", action="append", metavar="KEY=VALUE",
                      help="environment variable for the base side only (repeatable)")
    p_ab.add_argument("--head-env", action="append", metavar="KEY=VALUE",
                      help="environment variable for the head side only (repeatable)")
    p_ab.add_argument("--base-root", metavar="DIR",
                      help="attnbench checkout the base side imports (default: this one)")
    p_ab.add_argument("--head-root", metavar="DIR",
                      help="attnbench checkout the head side imports (default: this one)")
    p_ab.add_argument("--out", help="output directory (default: results/ab-<suite>-<timestamp>)")
    for option, text in (("--impl", "implementations to keep (comma list, globs)"),
                         ("--seq-len", "seq_len values to keep"), ("--dtype", "dtypes to keep"),
                         ("--device", "devices to keep"), ("--causal", "keep causal or full")):
        p_ab.add_argument(option, action="append", help=text)
    p_ab.add_argument("--threads", type=_positive_int, help="intra-op threads on both sides")
    p_ab.add_argument("--budget", type=_positive_float, help="sampling seconds per case and side")
    p_ab.add_argument("--timeout", type=_positive_float, help="seconds before a request is killed")
    p_ab.add_argument("--target-ci", type=_positive_float,
                      help="stop when both medians' 95%% CI are within ± this fraction")
    p_ab.add_argument("--threshold", type=_fraction, default=0.05, help="as for compare")
    p_ab.add_argument("--mem-threshold", type=_fraction, default=0.10, help="as for compare")
    p_ab.add_argument("--quiet", action="store_true", help="only the verdict")
    p_ab.set_defaults(func=cmd_ab, mem_limit=None)

    p_base = sub.add_parser("baseline", help="save or list reference runs (results/baselines/)")
    actions = p_base.add_subparsers(dest="action", parser_class=_Parser, required=True)
    b_save = actions.add_parser("save", help="store RUN_DIR as baseline NAME")
    b_save.add_argument("run_dir", metavar="RUN")
    b_save.add_argument("name", metavar="NAME")
    b_save.add_argument("--force", action="store_true", help="replace an existing baseline")
    b_list = actions.add_parser("list", help="the stored baselines")
    for p in (b_save, b_list):
        p.add_argument("--baselines-dir", default=str(BASELINES_DIR), metavar="DIR")
    p_base.set_defaults(func=cmd_baseline)


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
    _add_gate_commands(sub)

    from harness import profile
    profile.add_parser(sub)
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
