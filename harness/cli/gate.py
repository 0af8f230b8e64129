"""The regression gate's commands: `attnbench compare`, `attnbench ab`, `attnbench baseline`."""
from __future__ import annotations

import os
import shutil
import sys
from datetime import datetime
from pathlib import Path

from harness import values
from harness.cli.args import (EXIT_INTERRUPTED, EXIT_OK, RESULTS_DIR, Parser, UsageError,
                              add_filter_options, add_timing_options, arg, make_dir,
                              output_dir, output_file)


def _write_comparison(result: dict, md_path, json_path, title: str) -> None:
    from harness.analysis import compare
    from harness.report import gate as gate_text

    try:
        if md_path:
            Path(md_path).write_text(gate_text.render_markdown(result, title), encoding="utf-8")
        if json_path:
            compare.write_json(result, json_path)
    except OSError as exc:
        raise UsageError(f"cannot write {exc.filename} ({exc.strerror})") from None
    for line in gate_text.console_lines(result):
        print(line)
    for what, path in (("markdown", md_path), ("json", json_path)):
        if path:
            print(f"{what}: {path}")


def cmd_compare(args) -> int:
    from harness.store import baselines
    from harness.analysis import compare

    output_file(args.md, "--md")
    output_file(args.json, "--json")
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
    from harness.store import baselines

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
    from harness.run.ab import ROOT

    if path is None:
        return ROOT
    root = Path(path).resolve()
    from harness.run.ab import WORKER_MODULE

    worker = Path(*WORKER_MODULE.split(".")).with_suffix(".py")
    if not (root / worker).is_file():
        raise UsageError(f"{option}: {path} is not an attnbench checkout with {worker}")
    return root


def cmd_ab(args) -> int:
    import dataclasses

    from harness.analysis import compare, scaling
    from harness.cli.run import make_plan
    from harness.report import gate as gate_text
    from harness.report import write_reports
    from harness.run import ab
    from harness.store import RunDir, write_plan
    from harness.units import duration

    given = output_dir(args.out)
    suite, plan = make_plan(args)
    settings = ab.ab_settings(plan.timing)
    plan = dataclasses.replace(plan, timing=settings)
    cases, threads = list(plan.cases), plan.overrides["threads"]
    specs = {"base": ab.SideSpec("base", _python(args.base_python, "--base-python"),
                                 _env_pairs(args.base_env, "--base-env"),
                                 _root(args.base_root, "--base-root")),
             "head": ab.SideSpec("head", _python(args.head_python, "--head-python"),
                                 _env_pairs(args.head_env, "--head-env"),
                                 _root(args.head_root, "--head-root"))}
    out = given or RESULTS_DIR / f"ab-{suite.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    for name in specs:
        if (out / name / "results.jsonl").exists():
            raise UsageError(f"--out: {out / name} already holds a run; choose another directory")
    try:
        envs = {name: ab.side_env(spec, threads, suite.name) for name, spec in specs.items()}
    except ab.ABError as exc:
        raise UsageError(str(exc)) from None
    for name, env in envs.items():
        run_dir = RunDir(make_dir(out / name))
        env["ab"] = {"side": name, "python": specs[name].python, "env": specs[name].env,
                     "root": str(specs[name].root)}
        run_dir.write_env(env)
        write_plan(run_dir.path, dataclasses.replace(plan, extra={**plan.extra, "ab_side": name}))
        if suite.path:
            shutil.copyfile(suite.path, run_dir.path / "suite.toml")

    def show(case, base, head):
        row = compare.judge_case(base, head, args.threshold, args.mem_threshold, interleaved=True)
        timing = (f"base {duration(row.get('base_median_s'))}, head "
                  f"{duration(row.get('new_median_s'))}, ratio {gate_text.ratio_text(row)}"
                  if row.get("ratio") else f"{row['base_status']} / {row['new_status']}")
        print(f"{gate_text.LABELS.get(row['verdict'], row['verdict']):>15}  {case.case_id}: "
              f"{timing}", flush=True)

    if not args.quiet:
        print(f"attnbench ab suite {suite.name}: {len(cases)} cases, {threads} threads, "
              f"{settings.min_samples}..{settings.max_samples} samples per side -> {out}")
        for name, spec in specs.items():
            extra = " ".join(f"{k}={v}" for k, v in spec.env.items())
            print(f"  {name}: {spec.python} (torch {envs[name]['packages'].get('torch')}) {extra}")
    runner = ab.ABRunner(specs["base"], specs["head"], out, settings, threads,
                         on_record=None if args.quiet else show,
                         mem_limit=plan.overrides.get("mem_limit_bytes"))
    try:
        runner.measure_peaks(cases)
        result = ab.run_ab(runner, cases, args.threshold, args.mem_threshold,
                           note=(lambda text: None) if args.quiet else print)
    except ab.ABError as exc:
        raise UsageError(str(exc)) from None
    except KeyboardInterrupt:
        print(f"interrupted: partial runs in {out}/base and {out}/head", file=sys.stderr)
        return EXIT_INTERRUPTED
    for name, env in envs.items():
        env["workers"] = runner.infos[name]
        env["peaks"] = runner.peaks[name]
        RunDir(out / name).write_env(env)
        scaling.write_scaling(out / name, RunDir(out / name).records())
        write_reports(out / name)
    result.update(base=str(out / "base"), new=str(out / "head"), forced=False,
                  differences=[list(d) for d in compare.fingerprint_differences(
                      envs["base"], envs["head"])])
    _write_comparison(result, out / "compare.md", out / "compare.json", "attnbench A/B")
    return compare.exit_code(result)


def add_parsers(sub) -> None:
    """The regression gate's subcommands: compare, ab, baseline."""
    from harness.store.baselines import BASELINES_DIR

    p_cmp = sub.add_parser("compare", help="regression gate: compare a new run with a base run "
                                           "or a stored baseline (exit 1 on a regression)")
    p_cmp.add_argument("runs", nargs="+", metavar="RUN",
                       help="BASE_RUN NEW_RUN, or only NEW_RUN with --baseline")
    p_cmp.add_argument("--baseline", metavar="NAME", help="compare with results/baselines/NAME")
    p_cmp.add_argument("--baselines-dir", default=str(BASELINES_DIR), metavar="DIR",
                       help=f"where baselines live (default: {BASELINES_DIR})")
    p_cmp.add_argument("--threshold", type=arg(values.FRACTION), default=0.05,
                       help="smallest slowdown that counts, e.g. 5%% (default 5%%)")
    p_cmp.add_argument("--mem-threshold", type=arg(values.FRACTION), default=0.10,
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
    add_filter_options(p_ab)
    add_timing_options(p_ab, per="case and side")
    p_ab.add_argument("--threshold", type=arg(values.FRACTION), default=0.05, help="as for compare")
    p_ab.add_argument("--mem-threshold", type=arg(values.FRACTION), default=0.10, help="as for compare")
    p_ab.add_argument("--mem-limit", metavar="SIZE",
                      help="as for run: cap what one case may allocate on each side (e.g. "
                           "512MiB); beyond it the case is recorded as oom and larger seq_len "
                           "of its configuration skipped")
    p_ab.add_argument("--quiet", action="store_true", help="only the verdict")
    p_ab.set_defaults(func=cmd_ab)

    p_base = sub.add_parser("baseline", help="save or list reference runs (results/baselines/)")
    actions = p_base.add_subparsers(dest="action", parser_class=Parser, required=True)
    b_save = actions.add_parser("save", help="store RUN_DIR as baseline NAME")
    b_save.add_argument("run_dir", metavar="RUN")
    b_save.add_argument("name", metavar="NAME")
    b_save.add_argument("--force", action="store_true", help="replace an existing baseline")
    b_list = actions.add_parser("list", help="the stored baselines")
    for p in (b_save, b_list):
        p.add_argument("--baselines-dir", default=str(BASELINES_DIR), metavar="DIR")
    p_base.set_defaults(func=cmd_baseline)


