"""`attnbench profile`: torch.profiler traces of a suite's torch cases and where their time goes."""
from __future__ import annotations

from harness import values
from harness.cli.args import (EXIT_FAILED, EXIT_OK, UsageError, add_filter_options, arg,
                              filter_text, output_dir)


def add_parser(subparsers) -> None:
    """`attnbench profile [SUITE] [--impl ...] [--seq-len ...] [--mode ...] [--out DIR]`."""
    p = subparsers.add_parser(
        "profile", help="torch.profiler traces of a suite's torch cases, the top operators, and "
                        "the share of time in attention, feed-forward and normalisation")
    p.add_argument("suite", nargs="?", default="encoder",
                   help="suite file or built-in name (default: encoder)")
    add_filter_options(p, with_mode=True)
    p.add_argument("--out", help="directory; files go to OUT/profile/ (default: "
                                 "results/<suite>-profile-<timestamp>; a run directory is fine)")
    p.add_argument("--repeats", type=arg(values.COUNT), default=3,
                   help="calls recorded per case, at least (default 3)")
    p.add_argument("--min-time", type=arg(values.NON_NEGATIVE_SECONDS), default=0.5,
                   metavar="SECONDS",
                   help="record calls for at least this long per case (default 0.5)")
    p.add_argument("--warmup", type=arg(values.NON_NEGATIVE_COUNT), default=2, help="calls before recording (default 2)")
    p.add_argument("--threads", type=arg(values.THREADS),
                   help="torch intra-op threads (default: physical cores)")
    p.add_argument("--top", type=arg(values.COUNT), default=15, help="rows of the top-operators table")
    p.set_defaults(func=cmd_profile)


def _profile_each(profiler, cases, folder, args) -> tuple[list[dict], int]:
    """Each case's summary, printed as it comes; and how many cases failed."""
    from harness.units import duration

    summaries, failed = [], 0
    for case in sorted(cases, key=lambda c: (c.impl, c.mode, c.seq_len)):
        print(f"profiling {case.case_id} ...", flush=True)
        s = profiler.profile(case, folder, repeats=args.repeats, warmup=args.warmup,
                             row_limit=args.top, min_time_s=args.min_time)
        if "error" in s:
            print(f"  failed: {s['error']}", flush=True)
            failed += 1
            continue
        sh = s["shares"]
        print(f"  {duration(s['ms_per_call'] / 1e3)} per call: attention {sh['attention']:.0%} (core "
              f"{sh['attention.core']:.0%}), feed_forward {sh['feed_forward']:.0%}, norm "
              f"{sh['norm']:.0%}, other {sh['other']:.0%}", flush=True)
        summaries.append(s)
    return summaries, failed


def cmd_profile(args) -> int:
    from harness import registry
    from harness.report.profile import markdown
    from harness.run.profile import Profiler
    from harness.store import Request, RunDir, physical_cores
    from harness.store.plan import select

    given = output_dir(args.out)
    suite, _, cases = select(Request(suite=args.suite, filters=filter_text(args)),
                             registry.adapters())
    with Profiler(args.threads or physical_cores()) as profiler:
        cases, skipped = profiler.select(cases, registry.adapters())
        if not cases:
            raise UsageError(f"profile: no torch case of suite {suite.name!r} is left to profile "
                             f"({'; '.join(f'{k}: {v}' for k, v in skipped.items()) or 'filters'})")
        run_dir = RunDir.named(f"{suite.name}-profile", given)
        folder = run_dir.folder("profile")
        for what, why in skipped.items():
            print(f"skipped {what}: {why}")
        summaries, failed = _profile_each(profiler, cases, folder, args)
    meta = {"suite": suite.name, "threads": profiler.info.get("threads"),
            "torch": profiler.info.get("torch"), "repeats": args.repeats,
            "min_time_s": args.min_time, "warmup": args.warmup}
    run_dir.save_json("profile/summary.json", {**meta, "cases": summaries}, indent=2)
    (folder / "summary.md").write_text(markdown(summaries))
    print(markdown(summaries))
    print(f"traces and tables: {folder}/")
    return EXIT_FAILED if failed else EXIT_OK
