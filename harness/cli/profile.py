"""`attnbench profile`: torch.profiler traces of a suite's torch cases and where their time goes."""
from __future__ import annotations

import json
from datetime import datetime

from harness import values
from harness.cli.args import (EXIT_OK, RESULTS_DIR, UsageError, add_filter_options, arg,
                              filter_cases, filters_of, make_dir,
                              output_dir)


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


def select_cases(args):
    """The suite's torch cases that pass the filters, and a note for what was left out."""
    from harness import registry
    from harness.spec import load_suite

    known = {name: adapter.level for name, adapter in registry.adapters().items()}
    suite = load_suite(args.suite, known)
    cases = filter_cases(suite.cases(), filters_of(args, known))
    adapters = registry.adapters()
    runnable, skipped = [], {}
    for case in cases:
        adapter = adapters[case.impl]
        if adapter.framework != "torch":
            skipped[case.impl] = "not a torch implementation (the profiler is torch's)"
            continue
        reasons = adapter.unsupported(case)
        if reasons:
            skipped.setdefault(case.impl + f" ({case.mode})", reasons[0])
            continue
        runnable.append(case)
    if not runnable:
        raise UsageError(f"profile: no torch case of suite {suite.name!r} is left to profile "
                         f"({'; '.join(f'{k}: {v}' for k, v in skipped.items()) or 'filters'})")
    return suite, runnable, skipped


def cmd_profile(args) -> int:
    from harness import registry
    from harness.report.profile import markdown
    from harness.run.profile import profile_case
    from harness.store import physical_cores
    from harness.units import duration

    given = output_dir(args.out)
    suite, cases, skipped = select_cases(args)
    out = given or RESULTS_DIR / f"{suite.name}-profile-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    folder = make_dir(out / "profile")
    import torch

    torch.set_num_threads(args.threads or physical_cores())
    for what, why in skipped.items():
        print(f"skipped {what}: {why}")
    summaries = []
    for case in sorted(cases, key=lambda c: (c.impl, c.mode, c.seq_len)):
        print(f"profiling {case.case_id} ...", flush=True)
        s = profile_case(case, registry.get(case.impl), folder, args.repeats, args.warmup,
                         args.top, args.min_time)
        sh = s["shares"]
        print(f"  {duration(s['ms_per_call'] / 1e3)} per call: attention {sh['attention']:.0%} (core "
              f"{sh['attention.core']:.0%}), feed_forward {sh['feed_forward']:.0%}, norm "
              f"{sh['norm']:.0%}, other {sh['other']:.0%}", flush=True)
        summaries.append(s)
    meta = {"suite": suite.name, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "repeats": args.repeats, "min_time_s": args.min_time, "warmup": args.warmup}
    (folder / "summary.json").write_text(json.dumps({**meta, "cases": summaries}, indent=2))
    (folder / "summary.md").write_text(markdown(summaries))
    print(markdown(summaries))
    print(f"traces and tables: {folder}/")
    return EXIT_OK
