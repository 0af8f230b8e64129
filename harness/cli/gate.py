"""The regression gate's commands: `attnbench compare`, `attnbench ab`, `attnbench baseline`."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from harness import values
from harness.cli.args import (EXIT_INTERRUPTED, EXIT_OK, Parser, UsageError, add_filter_options,
                              add_function_option, add_timing_options, arg, output_dir,
                              output_file, request_of, use_functions)


def _write_comparison(result: dict, md_path, json_path, title: str) -> None:
    from harness.report import gate as gate_text
    from harness.store import write_json

    try:
        if md_path:
            Path(md_path).write_text(gate_text.render_markdown(result, title), encoding="utf-8")
        if json_path:
            write_json(json_path, result)
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
    json_path = _json_target(args)
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
    if json_path == STDOUT:  # the JSON alone on stdout (for a pipe), the verdict on stderr
        import contextlib
        import json

        from harness.store import json_safe

        with contextlib.redirect_stdout(sys.stderr):
            _write_comparison(result, args.md, None, "attnbench regression gate")
        print(json.dumps(json_safe(result), indent=1, allow_nan=False))
    else:
        _write_comparison(result, args.md, json_path, "attnbench regression gate")
    return compare.exit_code(result)


STDOUT = "-"


def _json_target(args) -> str | None:
    """Where compare's JSON goes: a file (--json-out FILE, or --json FILE, its older
    spelling), STDOUT (a bare --json), or nowhere."""
    if args.json is not None and args.json_out:
        raise UsageError(f"--json and --json-out {args.json_out}: expected one of them (--json "
                         "prints the JSON, --json-out FILE writes it; --json FILE is the older "
                         "spelling of --json-out FILE)")
    target = args.json_out or args.json
    if target != STDOUT:
        output_file(target, "--json-out" if args.json_out else "--json")
    return target


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


def _sides(args) -> dict:
    """The two sides' interpreters, environment variables and checkouts, each checked."""
    from harness.run.ab import SideSpec

    return {name: SideSpec(name, _python(getattr(args, f"{name}_python"), f"--{name}-python"),
                           _env_pairs(getattr(args, f"{name}_env"), f"--{name}-env"),
                           _root(getattr(args, f"{name}_root"), f"--{name}-root"))
            for name in ("base", "head")}


def _start_sides(out: Path, suite, plan, specs: dict) -> dict:
    """OUT/base and OUT/head started as run directories, each with the env.json its own
    interpreter captured (its own package versions) and what makes it that side."""
    import dataclasses

    from harness.run import ab
    from harness.store import RunDir

    dirs = {name: RunDir(out / name) for name in specs}
    for run_dir in dirs.values():
        run_dir.refuse_if_held()
    try:
        envs = {name: ab.side_env(spec, plan.overrides["threads"], suite.name)
                for name, spec in specs.items()}
    except ab.ABError as exc:
        raise UsageError(str(exc)) from None
    for name, run_dir in dirs.items():
        spec = specs[name]
        side = {"side": name, "python": spec.python, "env": spec.env, "root": str(spec.root)}
        run_dir.start(dataclasses.replace(plan, extra={**plan.extra, "ab_side": name}),
                      env={**envs[name], "ab": side}, suite_path=suite.path)
    return dirs


def _announce(suite, plan, specs: dict, dirs: dict, out: Path) -> None:
    settings = plan.timing
    print(f"attnbench ab suite {suite.name}: {len(plan.cases)} cases, "
          f"{plan.overrides['threads']} threads, {settings.min_samples}..{settings.max_samples} "
          f"samples per side -> {out}")
    for name, spec in specs.items():
        extra = " ".join(f"{k}={v}" for k, v in spec.env.items())
        torch = dirs[name].env["packages"].get("torch")
        print(f"  {name}: {spec.python} (torch {torch}) {extra}")


def _show(args, peaks: dict):
    """One line per case as both sides finish it: the verdict so far and the two medians.
    `peaks`: the runner's, per side (the clocks' resolutions), filled before the first case."""
    from harness.analysis import compare
    from harness.report import gate as gate_text
    from harness.units import duration

    def show(case, base, head):
        row = compare.judge_case(base, head, args.threshold, args.mem_threshold, interleaved=True,
                                 peaks=(peaks.get("base"), peaks.get("head")))
        timing = (f"base {duration(row.get('base_median_s'))}, head "
                  f"{duration(row.get('new_median_s'))}, ratio {gate_text.ratio_text(row)}"
                  if row.get("ratio") else f"{row['base_status']} / {row['new_status']}")
        print(f"{gate_text.LABELS.get(row['verdict'], row['verdict']):>15}  {case.case_id}: "
              f"{timing}", flush=True)
    return show


def cmd_ab(args) -> int:
    import dataclasses

    from harness import registry
    from harness.analysis import compare
    from harness.report.finish import finish_run
    from harness.run import ab
    from harness.store import make_plan, timestamped

    given = output_dir(args.out)
    use_functions(args)
    suite, plan = make_plan(request_of(args), registry.adapters())
    plan = dataclasses.replace(plan, timing=ab.ab_settings(plan.timing))
    specs = _sides(args)
    out = given or timestamped(f"ab-{suite.name}")
    dirs = _start_sides(out, suite, plan, specs)
    if not args.quiet:
        _announce(suite, plan, specs, dirs, out)
    runner = ab.ABRunner(specs["base"], specs["head"], out, plan.timing, plan.overrides["threads"],
                         mem_limit=plan.overrides.get("mem_limit_bytes"))
    if not args.quiet:
        runner.on_record = _show(args, runner.peaks)
    try:
        runner.measure_peaks(list(plan.cases))
        result = ab.run_ab(runner, list(plan.cases), args.threshold, args.mem_threshold,
                           note=(lambda text: None) if args.quiet else print)
    except ab.ABError as exc:
        raise UsageError(str(exc)) from None
    except KeyboardInterrupt:
        print(f"interrupted: partial runs in {out}/base and {out}/head", file=sys.stderr)
        return EXIT_INTERRUPTED
    for name, run_dir in dirs.items():
        run_dir.note_env(workers=runner.infos[name], peaks=runner.peaks[name],
                         mem_limit_bytes=plan.overrides.get("mem_limit_bytes"))
        finish_run(run_dir, plan)
    result.update(base=str(out / "base"), new=str(out / "head"), forced=False,
                  differences=[list(d) for d in compare.fingerprint_differences(
                      dirs["base"].env, dirs["head"].env)])
    _write_comparison(result, out / "compare.md", out / "compare.json", "attnbench A/B")
    return compare.exit_code(result)


def _percent(fraction: float) -> str:
    return f"{fraction:.0%}".replace("%", "%%")  # argparse formats help text with %


def _add_thresholds(parser, own_help: bool = True) -> None:
    """--threshold and --mem-threshold, defaulting to the gate's own (harness.analysis.compare)."""
    from harness.analysis.compare import DEFAULT_MEM_THRESHOLD, DEFAULT_THRESHOLD

    parser.add_argument("--threshold", type=arg(values.FRACTION), default=DEFAULT_THRESHOLD,
                        help=f"smallest slowdown that counts, e.g. 5%% (default "
                             f"{_percent(DEFAULT_THRESHOLD)})" if own_help else "as for compare")
    parser.add_argument("--mem-threshold", type=arg(values.FRACTION),
                        default=DEFAULT_MEM_THRESHOLD,
                        help=f"smallest peak-memory growth that counts (default "
                             f"{_percent(DEFAULT_MEM_THRESHOLD)})" if own_help else "as for compare")


def _add_compare(sub, baselines_dir: Path) -> None:
    p_cmp = sub.add_parser("compare", help="regression gate: compare a new run with a base run "
                                           "or a stored baseline (exit 1 on a regression)")
    p_cmp.add_argument("runs", nargs="+", metavar="RUN",
                       help="BASE_RUN NEW_RUN, or only NEW_RUN with --baseline")
    p_cmp.add_argument("--baseline", metavar="NAME", help="compare with results/baselines/NAME")
    p_cmp.add_argument("--baselines-dir", default=str(baselines_dir), metavar="DIR",
                       help=f"where baselines live (default: {baselines_dir})")
    _add_thresholds(p_cmp)
    p_cmp.add_argument("--force", action="store_true",
                       help="compare runs from different machines or software anyway")
    p_cmp.add_argument("--md", metavar="FILE", help="write the Markdown (a PR comment) to FILE")
    p_cmp.add_argument("--json", nargs="?", const=STDOUT, metavar="FILE",
                       help="print every case's statistics as JSON on stdout (the verdict then "
                            "goes to stderr); --json FILE is the older spelling of --json-out")
    p_cmp.add_argument("--json-out", metavar="FILE", help="write every case's statistics to FILE")
    p_cmp.set_defaults(func=cmd_compare)


def _add_ab(sub) -> None:
    p_ab = sub.add_parser("ab", help="interleaved A/B: the same cases in two Python environments, "
                                     "side by side, then the regression gate")
    p_ab.add_argument("suite", nargs="?", help="suite file or built-in name")
    for side in ("base", "head"):
        p_ab.add_argument(f"--{side}-python", default=sys.executable, metavar="PATH",
                          help=f"interpreter of the {side} side (default: this one)")
    for side in ("base", "head"):
        p_ab.add_argument(f"--{side}-env", action="append", metavar="KEY=VALUE",
                          help=f"environment variable for the {side} side only (repeatable)")
    for side in ("base", "head"):
        p_ab.add_argument(f"--{side}-root", metavar="DIR",
                          help=f"attnbench checkout the {side} side imports (default: this one)")
    p_ab.add_argument("--out", help="output directory (default: results/ab-<suite>-<timestamp>)")
    add_filter_options(p_ab)
    add_function_option(p_ab)
    add_timing_options(p_ab, per="case and side")
    _add_thresholds(p_ab, own_help=False)
    p_ab.add_argument("--mem-limit", metavar="SIZE",
                      help="as for run: cap what one case may allocate on each side (e.g. "
                           "512MiB); beyond it the case is recorded as oom and larger seq_len "
                           "of its configuration skipped")
    p_ab.add_argument("--quiet", action="store_true", help="only the verdict")
    p_ab.set_defaults(func=cmd_ab)


def _add_baseline(sub, baselines_dir: Path) -> None:
    p_base = sub.add_parser("baseline", help="save or list reference runs (results/baselines/)")
    actions = p_base.add_subparsers(dest="action", parser_class=Parser, required=True)
    b_save = actions.add_parser("save", help="store RUN_DIR as baseline NAME")
    b_save.add_argument("run_dir", metavar="RUN")
    b_save.add_argument("name", metavar="NAME")
    b_save.add_argument("--force", action="store_true", help="replace an existing baseline")
    b_list = actions.add_parser("list", help="the stored baselines")
    for p in (b_save, b_list):
        p.add_argument("--baselines-dir", default=str(baselines_dir), metavar="DIR")
    p_base.set_defaults(func=cmd_baseline)


def add_parsers(sub) -> None:
    """The regression gate's subcommands: compare, ab, baseline."""
    from harness.store.baselines import BASELINES_DIR

    _add_compare(sub, BASELINES_DIR)
    _add_ab(sub)
    _add_baseline(sub, BASELINES_DIR)
