"""`attnbench profile`'s summary.md: where the time goes, per implementation and seq_len."""
from __future__ import annotations

from harness.report.format import escape_md
from harness.units import duration


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
        lines += [f"## {escape_md(impl)} ({escape_md(mode)}, {escape_md(dtype)})", "",
                  "| seq_len | attention | core | feed_forward | norm | other | ms/call |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        for s in sorted(rows, key=lambda r: r["seq_len"]):
            sh = s["shares"]
            lines.append(f"| {s['seq_len']} | {sh['attention']:.0%} | {sh['attention.core']:.0%} "
                         f"| {sh['feed_forward']:.0%} | {sh['norm']:.0%} | {sh['other']:.0%} "
                         f"| {duration(s['ms_per_call'] / 1e3, unit='ms')} |")
        lines.append("")
    return "\n".join(lines)
