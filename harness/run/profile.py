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

torch runs in a worker process of its own (`Profiler`), started as a run's torch worker is
(harness.run.process: its environment, thread count and start-up), never in the command's
process: a crash or a hang costs one case, and the next case gets a fresh worker.
"""
from __future__ import annotations

import json
import math
import multiprocessing
import os
import statistics
from pathlib import Path

from harness.run.process import WorkerGone, start_worker, worker_env
from harness.run.worker import PipeWorker
from harness.spec import Case
from harness.store import json_safe

PROBE_TIMEOUT_S = 120.0  # asking the library whether it can run a case
PROFILE_TIMEOUT_S = 1800.0  # one case: warm-up, the recorded calls, the trace written
NOT_TORCH = "not a torch implementation (the profiler is torch's)"

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
    write its trace and top table; return its summary. Warm-up and calls go through the
    harness's timer (one call per sample), so the figures are taken as a run takes them."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from harness.measure.timer import Timer
    from harness.problem.truth import problem
    from harness.spec import TimingSettings

    inputs, _ = problem(case)
    # the torch layer adapters mark their regions on request; kernels' operators are all there is
    prepared = (adapter.prepare(case, inputs, labels=True) if adapter.labels
                else adapter.prepare(case, inputs))
    activities = [ProfilerActivity.CPU]
    if case.device.startswith("cuda"):
        activities.append(ProfilerActivity.CUDA)
    timer = Timer(prepared.call, prepared.sync,
                  TimingSettings(warmup_s=0.0, min_sample_s=0.0))
    try:
        for _ in range(max(1, warmup)):
            timer.first_call()
        per_call = timer.fastest_call_s
        if min_time_s > 0 and per_call > 0:
            repeats = max(repeats, min(1000, math.ceil(min_time_s / per_call)))
        with profile(activities=activities) as prof:
            wall = statistics.fmean(timer.take(repeats))  # the calls, not the profiler's start/stop
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


# ---- the worker ----------------------------------------------------------------------------

def serve(conn, threads: int) -> None:
    """The profiling worker's loop, in its own process: answer "probe" (the library's reasons it
    cannot run a case) and "profile" (the case's summary) until told to stop (None)."""
    os.environ.update(worker_env("torch", threads))  # before torch or NumPy is imported
    info = start_worker("torch", threads)
    conn.send(_plain({"ready": True, "info": info}))
    while (message := conn.recv()) is not None:
        conn.send(_plain(_answer(message)))
    conn.close()


def _plain(answer: dict) -> dict:
    """The answer as JSON data: no torch object (torch.__version__ is one) crosses the pipe,
    since unpickling it would import torch in the command's process."""
    return json.loads(json.dumps(json_safe(answer)))


def _answer(message: dict) -> dict:
    from harness import registry

    case = Case.from_dict(message["case"])
    adapter = registry.get(case.impl)
    try:
        if message["kind"] == "probe":
            return {"reasons": adapter.unsupported(case)}
        return {"summary": profile_case(case, adapter, Path(message["folder"]),
                                        **message["options"])}
    except Exception as exc:  # the case's failure is told; the worker takes the next request
        return {"error": f"{type(exc).__name__}: {exc}"}


class ProfileWorker(PipeWorker):
    """The handle on one profiling worker (`serve`), spawned as the run's workers are."""

    family = "torch"

    def __init__(self, threads: int):
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=serve, args=(child, threads), daemon=True,
                                   name="attnbench-profile")
        self.process.start()
        child.close()
        self.info = None
        self.ready()


class Profiler:
    """torch.profiler for the command's cases, in a worker process (started at the first
    request, again after one dies). A worker that dies or hangs is that case's error."""

    def __init__(self, threads: int):
        self.threads = threads
        self.worker: ProfileWorker | None = None
        self.info: dict = {}  # the worker's start-up info: torch's version, its threads

    def __enter__(self) -> "Profiler":
        return self

    def __exit__(self, *exc) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker = None

    def _ask(self, message: dict, timeout_s: float, doing: str) -> dict:
        try:
            if self.worker is None:
                self.worker = ProfileWorker(self.threads)
                self.info = self.worker.info
            return self.worker.ask(message, timeout_s, doing)
        except WorkerGone as gone:
            if self.worker is not None:
                self.worker.kill()
            self.worker = None
            return {"error": gone.reason}

    def select(self, cases: list[Case], adapters: dict) -> tuple[list[Case], dict[str, str]]:
        """The cases torch.profiler can profile here, and why each other one is left out (an
        implementation that is not torch's; the library's own reason)."""
        runnable, skipped = [], {}
        for case in cases:
            if adapters[case.impl].framework != "torch":
                skipped[case.impl] = NOT_TORCH
                continue
            answer = self._ask({"kind": "probe", "case": case.to_dict()}, PROBE_TIMEOUT_S,
                               "asking the library")
            reasons = answer["reasons"] if "reasons" in answer else [answer["error"]]
            if reasons:
                skipped.setdefault(case.impl + f" ({case.mode})", reasons[0])
                continue
            runnable.append(case)
        return runnable, skipped

    def profile(self, case: Case, out_dir: Path, **options) -> dict:
        """`profile_case`'s summary of one case (its options as there), or {"error": why}."""
        answer = self._ask({"kind": "profile", "case": case.to_dict(), "folder": str(Path(out_dir).resolve()),
                            "options": options}, PROFILE_TIMEOUT_S, "profiling the case")
        return answer.get("summary") or answer
