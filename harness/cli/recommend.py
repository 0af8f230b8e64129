"""`attnbench recommend`: which implementation to use for one problem, answered from a run
(`--from RUN`, the nearest measured shape) or from a short measurement of that one problem,
made by the ordinary runner into a run directory of its own. `--table` prints the answer for
every shape of a run."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from harness.cli.args import EXIT_FAILED, EXIT_OK, UsageError
from harness.constants import DTYPES

# A short focused measurement: a few tenths of a second of samples per implementation.
QUICK_TIMING = {"warmup_s": 0.05, "min_samples": 5, "max_samples": 300, "budget_s": 0.5,
                "timeout_s": 120.0}
SHAPE_OPTIONS = (("batch", "--batch"), ("heads", "--heads"), ("seq_len", "--seq-len"),
                 ("head_dim", "--head-dim"), ("dtype", "--dtype"), ("device", "--device"))
# the problem's other axes, each at its Case default when not given
OPTIONAL_OPTIONS = (("kv_heads", "--kv-heads"), ("seq_len_kv", "--seq-len-kv"),
                    ("causal_align", "--causal-align"), ("padding", "--padding"),
                    ("lengths", "--lengths"), ("layout", "--layout"), ("window", "--window"),
                    ("alibi", "--alibi"), ("bias", "--bias"), ("softcap", "--softcap"))


def _problem(args) -> dict:
    """The problem asked, each value checked by the rule a suite file's key obeys."""
    from harness.spec import SWEEP_KEYS

    missing = [option for key, option in SHAPE_OPTIONS if getattr(args, key) is None]
    if missing:
        raise UsageError(f"recommend: missing {', '.join(missing)}: expected the problem's "
                         "--batch, --heads, --seq-len, --head-dim, --dtype and --device "
                         "(or --from RUN --table)")
    problem = {"causal": bool(args.causal)}
    for key, option in (*SHAPE_OPTIONS, *OPTIONAL_OPTIONS, ("mode", "--mode")):
        if getattr(args, key) is None:
            continue  # an optional axis left out: the Case's default (seq_len_kv: seq_len...)
        try:
            problem[key] = SWEEP_KEYS[key].from_text(getattr(args, key), option)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    return _checked_problem(problem, args.causal_align is not None)


def _checked_problem(problem: dict, align_given: bool) -> dict:
    """The problem with every field a Case gives it, refused as a suite would refuse it."""
    from harness.spec import ALIGN_MEANINGS, Case, case_problem

    case = Case(impl="recommend", level="kernel", **problem)
    invalid = case_problem(case)
    if invalid:
        key, why = invalid
        raise UsageError(f"recommend: --{key.replace('_', '-')}: {why}")
    if case.causal and case.seq_len != case.seq_len_kv and not align_given:
        raise UsageError(f"recommend: --causal with --seq-len {case.seq_len} != --seq-len-kv "
                         f"{case.seq_len_kv} is ambiguous: expected --causal-align top_left or "
                         f"bottom_right ({ALIGN_MEANINGS})")
    return {k: v for k, v in case.to_dict().items() if k not in ("impl", "level")}


def _records_from(path: str) -> list[dict]:
    from harness.store import load_records, require_run_dir

    return load_records(require_run_dir(path, "--from"))


def _impls(args, records: list[dict] | None) -> list[str]:
    """The implementations --impl keeps: of the run's, or of every registered kernel."""
    from harness.store.plan import impl_patterns, matches

    if records is not None:
        known = sorted({r["impl"] for r in records})
    else:
        from harness import registry

        known = sorted(n for n, a in registry.adapters().items() if a.level == "kernel")
    patterns = impl_patterns(args.impl, known)
    return [n for n in known if not patterns or matches(n, patterns)]


def _measure(problem: dict, impls: list[str]) -> tuple[list[dict], Path]:
    """Measure the one problem with each implementation through the ordinary runner."""
    from harness.run.runner import Runner
    from harness.spec import Case, TimingSettings
    from harness.store import RunDir, plan_of_cases

    cases = [Case(impl=i, level="kernel", **problem) for i in impls]
    plan = plan_of_cases("recommend", cases, TimingSettings(**QUICK_TIMING), recommend=problem)
    run_dir = RunDir.named("recommend")
    run_dir.start(plan)
    print(f"measuring {len(cases)} implementations on this problem "
          f"({plan.timing.budget_s:g} s of samples each) -> {run_dir.path}", file=sys.stderr)
    Runner(run_dir, plan.timing, plan.overrides["threads"]).run(cases)
    return run_dir.records(), run_dir.path


def cmd_recommend(args) -> int:
    from harness.analysis import recommend as rec
    from harness.cli.args import size
    from harness.report import recommend as text
    from harness.store import json_safe

    budget = size(args.mem_budget, "--mem-budget")
    problem = None if args.table else _problem(args)
    records = _records_from(args.source) if args.source else None
    if args.table:
        if records is None:
            raise UsageError("recommend --table: expected --from RUN (the run whose shapes "
                             "make the table)")
        keep = set(_impls(args, records))
        table = rec.dispatch_table([r for r in records if r["impl"] in keep], budget)
        if args.json:
            print(json.dumps(json_safe(table), indent=1))
        else:
            for line in text.table_lines(table, args.source):
                print(line)
        return EXIT_OK
    impls = _impls(args, records)
    source = args.source
    if records is None:
        records, out = _measure(problem, impls)
        source = str(out)
    try:
        answer = rec.recommend([r for r in records if r["impl"] in impls], problem, budget)
    except rec.RecommendError as exc:
        raise UsageError(f"--from: {source}: {exc}") from None
    answer["source"], answer["measured_now"] = source, args.source is None
    if args.json:
        print(json.dumps(json_safe(answer), indent=1))
    else:
        for line in text.answer_lines(answer):
            print(line)
    return EXIT_OK if answer["recommended"] else EXIT_FAILED


def add_parser(sub) -> None:
    p = sub.add_parser("recommend", help="which implementation to use for one problem (from a "
                       "run, or measured now)")
    p.add_argument("--from", dest="source", metavar="RUN",
                   help="answer from this run directory (nearest measured shape) instead of "
                        "measuring the problem now")
    p.add_argument("--batch")
    p.add_argument("--heads")
    p.add_argument("--seq-len")
    p.add_argument("--head-dim")
    p.add_argument("--dtype", help=f"one of {', '.join(DTYPES)}")
    p.add_argument("--device", help="cpu, cuda or cuda:N")
    p.add_argument("--causal", action="store_true", help="a causal mask (default: full)")
    p.add_argument("--kv-heads", help="key/value heads (grouped-query attention; default: "
                   "--heads)")
    p.add_argument("--seq-len-kv", help="keys per sequence (default: --seq-len); with fewer "
                   "queries, a decode or chunked-prefill problem")
    p.add_argument("--causal-align", help="top_left (query i sees keys 0..i) or bottom_right "
                   "(query i is token Nk - Nq + i: decode); required for a causal problem "
                   "whose --seq-len and --seq-len-kv differ")
    p.add_argument("--padding", help="fraction of each sequence's keys that are padding")
    p.add_argument("--lengths", help="constant, uniform, longtail or bimodal (a ragged batch)")
    p.add_argument("--layout", help="padded or packed (a ragged batch end to end)")
    p.add_argument("--window", help="sliding window: the most recent keys each query sees")
    p.add_argument("--alibi", help="true for ALiBi's per-head distance bias")
    p.add_argument("--bias", help="an additive score bias: none, head or batch_head")
    p.add_argument("--softcap", help="logit soft-capping at this value")
    p.add_argument("--mode", default="fwd", help="fwd (default) or fwd_bwd")
    p.add_argument("--mem-budget", metavar="SIZE",
                   help="the most memory one call may need beyond its inputs (e.g. 512MiB)")
    p.add_argument("--impl", action="append",
                   help="only these implementations (comma list, globs)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--table", action="store_true",
                   help="with --from: the answer for every shape of the run (a dispatch table)")
    p.set_defaults(func=cmd_recommend)
