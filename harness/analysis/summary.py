"""The headline numbers of a run, framework-free: the CLI prints them, reports render them."""
from __future__ import annotations

from collections import Counter

from harness.case import (axis_title, config_key, label_axes, label_cells, replicate_key,
                          series_key, shape_key, shape_order, sweep_len, value_of)
from harness.constants import FAILED_STATUSES, STATUSES, TIMED_STATUSES
from harness.measure.timer import HOST
from harness.units import duration
from impls.torch_sdpa import SDPA_VARIANTS

MATH_BACKEND = "math"  # SDPA's unfused composite path, as the kernel pass names it
# implementations that ask for the math backend: for them running it is no fallback
PINNED_TO_MATH = frozenset(name for name, backend, _ in SDPA_VARIANTS if backend == "MATH")
MATH_FALLBACK_WHY = ("The profiler saw SDPA's unfused math backend run where the dispatcher "
                     "chose the backend: these figures are not a fused kernel's.")

CELL_FOR_STATUS = {"mismatch": "MISMATCH", "error": "ERROR", "timeout": "TIMEOUT", "oom": "OOM",
                   "unsupported": "-"}


def status_counts(records: list[dict]) -> dict[str, int]:
    counts = Counter(r["status"] for r in records)
    return {s: counts.get(s, 0) for s in STATUSES}


def timers_used(records: list[dict]) -> Counter:
    """How many timed records each timer measured (records from before the `timer` field were
    all timed on the host clock, the only one there was)."""
    return Counter(r.get("timer") or HOST for r in records if r["status"] in TIMED_STATUSES)


def failures(records: list[dict]) -> list[dict]:
    return [r for r in records if r["status"] in FAILED_STATUSES]


def reasons_not_run(records: list[dict]) -> dict[str, str]:
    """What never ran, with the first reason given: "impl" when none of its cases ran,
    "impl (dtype)" when only some dtypes did not."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["impl"], r["dtype"]), []).append(r)
    dead = {key: rs[0]["reason"] for key, rs in groups.items()
            if all(r["status"] == "unsupported" for r in rs)}
    out = {}
    for impl in dict.fromkeys(key[0] for key in groups):
        mine = [key for key in groups if key[0] == impl]
        if all(key in dead for key in mine):
            out[impl] = dead[mine[0]]
        else:
            out.update({f"{impl} ({key[1]})": dead[key] for key in mine if key in dead})
    return out


def math_fallbacks(records: list[dict]) -> list[dict]:
    """Per implementation whose dispatcher chose the backend, the cases it ran on SDPA's math
    path (the profiler's `kernel`): its times there are the unfused path's, not a fused
    kernel's, which a grouped-K/V case (kv_heads < heads) often meets without a word from
    torch. One dict per implementation: impl, cases, grouped (how many of them), case_ids,
    and `text`, the sentence every output prints."""
    ran: dict[str, list[dict]] = {}
    for r in records:
        if r.get("kernel") == MATH_BACKEND and r["impl"] not in PINNED_TO_MATH:
            ran.setdefault(r["impl"], []).append(r)
    out = []
    for impl, rs in sorted(ran.items()):
        grouped = sum(value_of(r, "kv_heads") < value_of(r, "heads") for r in rs)
        out.append({"impl": impl, "cases": len(rs), "grouped": grouped,
                    "case_ids": [r["case_id"] for r in rs],
                    "text": fallback_text(impl, len(rs), grouped)})
    return out


def fallback_text(impl: str, cases: int, grouped: int) -> str:
    """"torch.sdpa ran the math backend for 6 grouped-K/V cases (kv_heads < heads): ..."."""
    def many(n, what):
        return f"{n} {what}case{'s' if n != 1 else ''}"
    if grouped == cases:
        which = many(cases, "grouped-K/V ") + " (kv_heads < heads)"
    elif grouped:
        which = f"{many(cases, '')}, {grouped} of them grouped-K/V (kv_heads < heads)"
    else:
        which = many(cases, "")
    return (f"{impl} ran the math backend for {which}: the fused kernels did not take "
            f"{'it' if cases == 1 else 'them'}, so its times there are the unfused path's")


UNSTABLE_MARK = "~"  # before a figure measured under contention or contradicting its neighbours


def median_text(record: dict) -> str:
    """Median in ms (marked when unstable), or the status where there is no trustworthy time."""
    if record["status"] == "ok":
        mark = UNSTABLE_MARK if record.get("stable") is False else ""
        return mark + duration(record["median_s"], unit="ms")
    return CELL_FOR_STATUS.get(record["status"], record["status"])


def latency_table(records: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Rows: implementation and configuration (dtype, mask, every axis that varies in the run and
    every variant of the problem); columns: the sweep length; cells: median ms.

    (impl, dtype) pairs that ran nothing are left out (see `reasons_not_run`).
    """
    groups: dict[tuple, set] = {}
    for r in records:
        groups.setdefault((r["impl"], r["dtype"]), set()).add(r["status"])
    shown = [r for r in records if groups[(r["impl"], r["dtype"])] != {"unsupported"}]
    return sweep_table(shown, median_text)


def memory_bound(record: dict) -> bool:
    """A timed record nearer the machine's bandwidth than its matmul peak: its bytes, not its
    FLOPs, bound it (decode), so GB/s is the figure that says how good it is."""
    bandwidth, peak = record.get("pct_of_bandwidth"), record.get("pct_of_peak")
    return record["status"] == "ok" and bool(bandwidth) and bool(peak) and bandwidth >= peak


def bandwidth_cell(record: dict) -> str:
    """GB/s and its percent of the measured copy bandwidth: "41.2 (63%)"."""
    mark = UNSTABLE_MARK if record.get("stable") is False else ""
    return f"{mark}{record['gbps']:.3g} ({record['pct_of_bandwidth']:.0f}%)"


def bandwidth_table(records: list[dict]) -> tuple[list[str], list[list[str]]]:
    """The memory-bound configurations' GB/s (% of the measured copy bandwidth), laid out as the
    latency table: empty when nothing in the run is memory-bound."""
    bound = {series_key(r) for r in records if memory_bound(r)}
    return sweep_table([r for r in records if series_key(r) in bound and r["status"] == "ok"
                        and r.get("gbps")], bandwidth_cell)


def sweep_table(records: list[dict], text) -> tuple[list[str], list[list[str]]]:
    """(header, rows): one row per implementation, configuration and seed, labelled as every
    table labels them (harness.case), one column per sweep length, `text(record)` in each cell."""
    axes = label_axes(records)
    lengths = sorted({sweep_len(r) for r in records})
    rows: dict[tuple, dict[int, str]] = {}
    labels: dict[tuple, list[str]] = {}
    for r in records:
        key = (*series_key(r), *replicate_key(r))
        labels[key] = [r["impl"], *label_cells(r, axes)]
        rows.setdefault(key, {})[sweep_len(r)] = text(r)
    header = ["impl", *(axis_title(a) for a in axes), *[f"N={n}" for n in lengths]]
    # (impl, configuration, replicate) and a sweep length make a shape_key to sort by
    order = sorted(rows, key=lambda k: (k[0], shape_order((*k[1:], 0))))
    return header, [labels[k] + [rows[k].get(n, "") for n in lengths] for k in order]


def matched_shapes(records: list[dict]) -> tuple[set[tuple], list[dict]]:
    """(the shapes a headline may aggregate over, the shapes left out and why).

    Within a configuration, the implementations compared are those with at least one ok record
    there. A shape counts only where every one of them has an ok, stable record: a group figure
    over a set in which some implementation ran out of memory, failed or was disturbed at some
    N compares different problems, and can move opposite to every case inside it. The keys are
    `harness.case.shape_key` values.
    """
    configs: dict[tuple, dict[tuple, dict[str, dict]]] = {}
    for r in records:
        configs.setdefault(config_key(r), {}).setdefault(shape_key(r), {})[r["impl"]] = r
    matched, left_out = set(), []
    for shapes in configs.values():
        compared = sorted({impl for by_impl in shapes.values() for impl, r in by_impl.items()
                           if r["status"] == "ok"})
        for shape, by_impl in shapes.items():
            why = []
            for impl in compared:
                r = by_impl.get(impl)
                if r is None:
                    why.append(f"{impl} not measured")
                elif r["status"] != "ok":
                    why.append(f"{impl} {r['status']}")
                elif r.get("stable") is False:
                    why.append(f"{impl} unstable")
            if not compared:
                continue
            if why:
                first = next(iter(by_impl.values()))
                left_out.append({"shape": shape, "record": first, "seq_len": sweep_len(first),
                                 "why": ", ".join(why)})
            else:
                matched.add(shape)
    return matched, left_out

