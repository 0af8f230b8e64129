"""`attnbench recommend`'s answer as text lines (as JSON: harness.store.json_safe)."""
from __future__ import annotations

from harness.analysis.recommend import kind_text, shape_text
from harness.units import MIB, duration


def _p(p) -> str:
    return "unknown" if p is None else (f"{p:.3f}" if p < 0.999 else "> 0.999")


def answer_lines(a: dict) -> list[str]:
    """The answer for one problem: what was asked, where the answer comes from, the winner and
    its margin, then every other implementation with why not."""
    asked, shape = a["problem"], a["shape"]
    lines = [f"problem: {shape_text(asked)} {kind_text(asked)}"]
    where = "measured now" if a.get("measured_now") else "from the run"
    lines.append(f"answer {where}: {a.get('source')}")
    if not a["exact"]:
        lines.append(f"nearest measured shape: {shape_text(shape)} (asked for "
                     f"{shape_text(asked)}); the answer is for that shape")
    if a.get("mem_budget_bytes"):
        lines.append(f"memory budget: {a['mem_budget_bytes'] / MIB:.3g} MiB")
    if not a["recommended"]:
        lines.append("recommended: none: no implementation agrees with the reference, was "
                     "measured undisturbed and fits the budget here")
    else:
        best = f"{a['recommended']} ({duration(a['median_s'])})"
        if a["runner_up"] is None:
            lines.append(f"recommended: {best}, the only implementation that qualifies")
        elif a["tie"]:
            lines.append(f"recommended: {best}, tied within noise with "
                         f"{', '.join(a['tied_with'])}: the lowest median, but not shown to be "
                         f"faster (P = {_p(a['p_faster'])} against {a['runner_up']})")
        else:
            lines.append(f"recommended: {best}, {a['margin']:.2f}x faster than the runner-up "
                         f"{a['runner_up']}; P(truly faster) = {_p(a['p_faster'])} (bootstrap "
                         "over the samples)")
    for x in a["implementations"]:
        if x["verdict"] == "recommended":
            continue
        median = f" ({duration(x['median_s'])})" if x["verdict"] in ("tie", "slower") else ""
        lines.append(f"  {x['impl']}{median}: {x['reason']}")
    return lines


def table_lines(table: list[dict], source: str) -> list[str]:
    """The dispatch table: one line per measured shape."""
    lines = [f"dispatch table from {source}: the implementation to use per measured shape"]
    for a in table:
        shape = a["shape"]
        head = f"{kind_text(shape)} {shape_text(shape)}: "
        if not a["recommended"]:
            lines.append(head + "none qualifies")
        elif a["runner_up"] is None:
            lines.append(head + f"{a['recommended']} (the only one that qualifies)")
        elif a["tie"]:
            lines.append(head + f"{a['recommended']}, tied with {', '.join(a['tied_with'])}")
        else:
            lines.append(head + f"{a['recommended']}, {a['margin']:.2f}x ahead of "
                         f"{a['runner_up']} (P = {_p(a['p_faster'])})")
    return lines
