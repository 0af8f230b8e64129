"""`attnbench profile`: where a case's time goes, from torch.profiler (torch cases only).

For each selected case: prepare it as a run would (same inputs and weights), warm up, then
record calls under torch.profiler (CPU activity; CUDA too on a GPU): at least `--repeats`,
and as many as fill `--min-time` seconds. Written to
OUT/profile/:
  <case>.trace.json   the Chrome trace (open in chrome://tracing or https://ui.perfetto.dev)
  <case>.top.txt      the top operators by self time (torch's key_averages table)
  summary.json        per case: calls, ms per call under the profiler, the top operators,
                      and the share of time in attention / feed_forward / norm / other
  summary.md          the shares per implementation and seq_len, as tables

How time is attributed. Every profiler event's self time goes to one category:
  - a labelled region it runs in: the hand-written modules (torch.*.naive) mark attention
    (projections and core), attention.core (softmax(QKᵀ/√d)V alone), feed_forward, norm and
    residual with record_function; nn.TransformerEncoderLayer gets attention, feed_forward and
    norm labels around self_attn, linear1/linear2 and norm1/norm2 (their forwards wrapped, not
    hooked: hooks would turn its fast path off);
  - otherwise its operator: an SDPA operator, or bmm/softmax under the fast path's
    aten::_native_multi_head_attention, is attention.core; anything else under the latter is
    attention; layer_norm is norm; linear/addmm/relu/gelu are feed_forward in an encoder
    block (the fast path runs in one aten operator, so its operators are all there is);
  - a backward node (autograd::engine::evaluate_function: XBackward0) belongs where the
    forward operator that made it (the same sequence number) belongs;
  - anything else (residual adds, views, the autograd engine's bookkeeping) is other.
Shares are of the summed self time of all events, i.e. of the calls' time on the CPU; the
profiler's own overhead inflates small cases (compare ms per call with the run's median).
"""
from __future__ import annotations

import inspect
import json
import math
import time
from datetime import datetime
from pathlib import Path

CATEGORIES = ("attention", "attention.core", "feed_forward", "norm", "other")
LABELS = {"attention": "attention", "attention.core": "attention.core",
          "feed_forward": "feed_forward", "norm": "norm", "residual": "other"}
BACKWARD_PREFIX = "autograd::engine::evaluate_function: "
ATTENTION_OPS = ("aten::_native_multi_head_attention", "aten::scaled_dot_product_attention",
                 "aten::_scaled_dot_product", "aten::softmax", "aten::_softmax",
                 "aten::_masked_softmax")
NORM_OPS = ("aten::layer_norm", "aten::native_layer_norm")
DENSE_OPS = ("aten::linear", "aten::addmm", "aten::_addmm_activation", "aten::relu",
             "aten::gelu", "aten::threshold", "aten::clamp_min")
CORE_OPS = ("aten::scaled_dot_product_attention", "aten::_scaled_dot_product")
# inside aten::_native_multi_head_attention (the fast path), the core's own operators
FAST_PATH_CORE_OPS = ("aten::bmm", "aten::baddbmm", "aten::_softmax", "aten::softmax",
                      "aten::_masked_softmax", "aten::matmul")


# ---- attribution --------------------------------------------------------------------------

def _chain(event):
    while event is not None:
        yield event
        event = event.cpu_parent


def _by_operator(chain_names: list[str], level: str) -> str | None:
    """Category from operator names alone (innermost first); None when they say nothing."""
    if any(n.startswith(CORE_OPS) for n in chain_names):
        return "attention.core"
    if "aten::_native_multi_head_attention" in chain_names:
        below = chain_names[:chain_names.index("aten::_native_multi_head_attention")]
        core = any(n.startswith(FAST_PATH_CORE_OPS) for n in below)
        return "attention.core" if core else "attention"
    if any(n.startswith(ATTENTION_OPS) for n in chain_names):
        return "attention"
    if any(n.startswith(NORM_OPS) for n in chain_names):
        return "norm"
    if any(n.startswith(DENSE_OPS) for n in chain_names):
        return "feed_forward" if level == "encoder" else "attention"
    return None


def _classify(event, level: str, forward_category: dict) -> str:
    names = []
    for e in _chain(event):
        if e.name in LABELS:
            if LABELS[e.name] == "attention" and any(n.startswith(CORE_OPS) for n in names):
                return "attention.core"  # SDPA inside a module labelled attention
            return LABELS[e.name]
        if e.name.startswith(BACKWARD_PREFIX):
            found = forward_category.get(e.sequence_nr)
            if found:
                return found
            return _by_operator(names, level) or _backward_by_node(e.name, level)
        names.append(e.name)
    return _by_operator(names, level) or "other"


def _backward_by_node(name: str, level: str) -> str:
    node = name[len(BACKWARD_PREFIX):].lower()
    if "attention" in node or "softmax" in node:
        return "attention"
    if "layernorm" in node:
        return "norm"
    if level == "encoder" and ("addmm" in node or "relu" in node or "gelu" in node):
        return "feed_forward"
    return "other"


def attribute(events, level: str) -> dict[str, float]:
    """Self time (µs) per category (see the module docstring). `attention` includes
    `attention.core`'s time; the categories other than attention.core sum to the total."""
    events = list(events)
    is_backward = {}
    for e in events:  # forward operators first: their categories name the backward nodes
        is_backward[e.id] = any(p.name.startswith(BACKWARD_PREFIX) for p in _chain(e))
    forward_category = {}
    for e in events:
        if not is_backward[e.id] and e.sequence_nr >= 0 and not e.name.startswith(BACKWARD_PREFIX):
            forward_category.setdefault(e.sequence_nr, _classify(e, level, {}))
    totals = dict.fromkeys(CATEGORIES, 0.0)
    for e in events:
        if e.name in LABELS:  # a label's own self time is the Python between its operators
            category = LABELS[e.name]
        else:
            category = _classify(e, level, forward_category)
        totals[category] += e.self_cpu_time_total
    totals["attention"] += totals["attention.core"]
    return totals


def shares(totals: dict[str, float]) -> dict[str, float]:
    whole = sum(v for k, v in totals.items() if k != "attention.core")
    return {k: (v / whole if whole else 0.0) for k, v in totals.items()}


# ---- one case ------------------------------------------------------------------------------

def slug(case) -> str:
    return case.case_id.replace("/", "_")


def profile_case(case, adapter, out_dir: Path, repeats: int = 3, warmup: int = 2,
                 row_limit: int = 15, min_time_s: float = 0.0) -> dict:
    """Profile at least `repeats` calls of one torch case, and enough of them to fill
    `min_time_s` (judged from the warm-up), so short calls are not judged on one call's noise;
    write its trace and top table; return its summary."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from harness.execute import problem

    inputs, _ = problem(case)
    if "labels" in inspect.signature(adapter.prepare).parameters:  # the torch layer adapters
        prepared = adapter.prepare(case, inputs, labels=True)
    else:  # kernels: their operators are all there is
        prepared = adapter.prepare(case, inputs)
    activities = [ProfilerActivity.CPU]
    if case.device.startswith("cuda"):
        activities.append(ProfilerActivity.CUDA)
    try:
        t0 = time.perf_counter()
        for _ in range(max(1, warmup)):
            prepared.call()
            prepared.sync()
        per_call = (time.perf_counter() - t0) / max(1, warmup)
        if min_time_s > 0 and per_call > 0:
            repeats = max(repeats, min(1000, math.ceil(min_time_s / per_call)))
        with profile(activities=activities) as prof:
            t0 = time.perf_counter()  # the calls, not the profiler's start and stop
            for _ in range(repeats):
                prepared.call()
                prepared.sync()
            wall = (time.perf_counter() - t0) / repeats
    finally:
        prepared.close()
    base = out_dir / slug(case)
    trace = base.with_name(base.name + ".trace.json")
    prof.export_chrome_trace(str(trace))
    averages = prof.key_averages()
    table = averages.table(sort_by="self_cpu_time_total", row_limit=row_limit)
    base.with_name(base.name + ".top.txt").write_text(table + "\n")
    total_self = sum(a.self_cpu_time_total for a in averages) or 1.0
    top = sorted(averages, key=lambda a: a.self_cpu_time_total, reverse=True)[:row_limit]
    totals = attribute(prof.events(), case.level)
    return {
        "case_id": case.case_id, "impl": case.impl, "level": case.level, "mode": case.mode,
        "dtype": case.dtype, "seq_len": case.seq_len, "calls": repeats,
        "ms_per_call": wall * 1e3, "threads": torch.get_num_threads(),
        "trace": trace.name,
        "top_ops": [{"name": a.key, "calls": a.count,
                     "self_ms": a.self_cpu_time_total / 1e3 / repeats,
                     "share": a.self_cpu_time_total / total_self} for a in top],
        "self_ms": {k: v / 1e3 / repeats for k, v in totals.items()},
        "shares": shares(totals),
    }


# ---- summaries -----------------------------------------------------------------------------

def markdown(summaries: list[dict]) -> str:
    """Per (impl, mode, dtype): a row per seq_len with the shares and ms per call."""
    lines = ["# Where the time goes", "",
             "Share of each call's CPU time (torch.profiler self time); `attention` is the whole "
             "self-attention sublayer (projections and core), `core` the part of it in "
             "softmax(QKᵀ/√d)V. ms/call is under the profiler.", ""]
    groups: dict[tuple, list[dict]] = {}
    for s in summaries:
        groups.setdefault((s["impl"], s["mode"], s["dtype"]), []).append(s)
    for (impl, mode, dtype), rows in groups.items():
        lines += [f"## {impl} ({mode}, {dtype})", "",
                  "| seq_len | attention | core | feed_forward | norm | other | ms/call |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        for s in sorted(rows, key=lambda r: r["seq_len"]):
            sh = s["shares"]
            lines.append(f"| {s['seq_len']} | {sh['attention']:.0%} | {sh['attention.core']:.0%} "
                         f"| {sh['feed_forward']:.0%} | {sh['norm']:.0%} | {sh['other']:.0%} "
                         f"| {s['ms_per_call']:.3g} |")
        lines.append("")
    return "\n".join(lines)


# ---- command line --------------------------------------------------------------------------

def add_parser(subparsers) -> None:
    """`attnbench profile [SUITE] [--impl ...] [--seq-len ...] [--mode ...] [--out DIR]`."""
    p = subparsers.add_parser(
        "profile", help="torch.profiler traces of a suite's torch cases, the top operators, and "
                        "the share of time in attention, feed-forward and normalisation")
    p.add_argument("suite", nargs="?", default="encoder",
                   help="suite file or built-in name (default: encoder)")
    for option, text in (("--impl", "implementations to keep (comma list, globs)"),
                         ("--seq-len", "seq_len values to keep"), ("--dtype", "dtypes to keep"),
                         ("--device", "devices to keep"), ("--causal", "keep causal or full"),
                         ("--mode", "modes to keep (fwd, fwd_bwd)")):
        p.add_argument(option, action="append", help=text)
    p.add_argument("--out", help="directory; files go to OUT/profile/ (default: "
                                 "results/<suite>-profile-<timestamp>; a run directory is fine)")
    p.add_argument("--repeats", type=int, default=3,
                   help="calls recorded per case, at least (default 3)")
    p.add_argument("--min-time", type=float, default=0.5, metavar="SECONDS",
                   help="record calls for at least this long per case (default 0.5)")
    p.add_argument("--warmup", type=int, default=2, help="calls before recording (default 2)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: physical cores)")
    p.add_argument("--top", type=int, default=15, help="rows of the top-operators table")
    p.set_defaults(func=cmd_profile)


def select_cases(args):
    """The suite's torch cases that pass the filters, and a note for what was left out."""
    from harness import registry
    from harness.cli import UsageError, _split, filter_cases
    from harness.spec import MODES, load_suite

    known = {name: adapter.level for name, adapter in registry.adapters().items()}
    suite = load_suite(args.suite, known)
    cases = filter_cases(suite.cases(), args, known)
    modes = _split(getattr(args, "mode", None))
    for m in modes:
        if m not in MODES:
            raise UsageError(f"--mode: unknown mode {m!r}: expected one of {', '.join(MODES)}")
    cases = [c for c in cases if not modes or c.mode in modes]
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
    from harness.cli import EXIT_OK, RESULTS_DIR, UsageError
    from harness.store import physical_cores

    if args.repeats < 1 or args.warmup < 0:
        raise UsageError("--repeats must be at least 1 and --warmup at least 0")
    suite, cases, skipped = select_cases(args)
    out = Path(args.out) if args.out else RESULTS_DIR / (
        f"{suite.name}-profile-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    folder = out / "profile"
    folder.mkdir(parents=True, exist_ok=True)
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
        print(f"  {s['ms_per_call']:.3g} ms/call: attention {sh['attention']:.0%} (core "
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
