"""The regression gate in words: the lines `attnbench compare` prints and the Markdown it
writes for a pull request. The verdicts and their evidence come from `harness.analysis.compare`;
this module only writes them down. Case ids, reasons and fingerprint values are user or library
text: in Markdown they are escaped (`escape_md`, `code_md`), so they print as the text they are.
"""
from __future__ import annotations

from harness.analysis.compare import (CONFIDENCE, FAILING, MEM_FLOOR_BYTES, VERDICT_ORDER,
                                      describe_differences)
from harness.report.format import code_md, escape_md, fmt_mib, md_table, percent
from harness.units import duration

LABELS = {"new_failure": "new failure", "still_failing": "still failing",
          "now_unsupported": "now unsupported", "now_supported": "now supported",
          "memory_growth": "memory growth", "other_machine": "other machine"}


def label(verdict: str) -> str:
    return LABELS.get(verdict, verdict)


def count_text(counts: dict, verdicts) -> str:
    """'1 regression, 2 new failures, 3 unchanged' for the verdicts that occurred."""
    def one(v, n):
        word = label(v)
        if n != 1 and v in ("regression", "improvement", "new_failure"):
            word = word.replace("failure", "failures") if v == "new_failure" else word + "s"
        return f"{n} {word}"
    return ", ".join(one(v, counts[v]) for v in verdicts if counts.get(v))


def headline(result: dict) -> str:
    counts = result["counts"]
    if result["verdict"] == "fail":
        missing = len((result.get("unrecorded") or {}).get("new") or [])
        parts = [count_text(counts, ("regression", "new_failure", "memory_growth"))]
        if missing:
            parts.append(f"the new run is incomplete ({missing} planned case"
                         f"{'s' if missing != 1 else ''} without a record)")
        return "FAIL: " + ", ".join(p for p in parts if p)
    rest = count_text(counts, ("improvement", "unchanged", "noisy"))
    return f"PASS: no regression ({rest or 'nothing timed in both runs'})"


def ratio_text(row: dict) -> str:
    if row.get("ratio") is None:
        return "-"
    return f"{row['ratio']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"


def p_text(value) -> str:
    return "-" if value is None else f"{value:.2g}"


def memory_text(row: dict) -> str:
    if row.get("mem_ratio") is None:
        return "-"
    text = f"{row['mem_ratio']:.2f}×"
    return text + " (growth)" if row.get("mem_verdict") else text


def incomplete_lines(result: dict) -> list[str]:
    """A run its plan says is incomplete: the gate judged fewer cases than were meant."""
    lines = []
    for side, ids in (result.get("unrecorded") or {}).items():
        if ids:
            shown = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
            lines.append(f"the {side} run is incomplete: {len(ids)} planned case"
                         f"{'s' if len(ids) != 1 else ''} have no record ({shown})")
    return lines


def rules_text(result: dict) -> str:
    """Which rule judged how many cases, in words (see harness.analysis.compare)."""
    rules = result.get("rules") or {}
    parts = []
    if rules.get("repeats"):
        parts.append(f"{rules['repeats']} by their repeats (Welch's t on the processes' medians: "
                     f"p < {result['alpha']:g} and beyond the {percent(result['threshold'])} "
                     "threshold)")
    if rules.get("single run"):
        parts.append(f"{rules['single run']} as single runs (a host-timer change must exceed "
                     f"{1 + result['single_run_min_effect']:g}x: two runs of one process each "
                     "differ by up to that much; measure with --repeats 3 to see less)")
    if rules.get("interleaved"):
        parts.append(f"{rules['interleaved']} interleaved (A/B: both sides took turns, "
                     f"{percent(result['threshold'])} threshold)")
    return "judged: " + "; ".join(parts) if parts else ""


def detectable_text(result: dict) -> str | None:
    """What the comparison could have seen: how many cases could have shown a slowdown of the
    threshold, and plainly where it was blind (harness.analysis.compare.detectable)."""
    seen = result.get("detectable") or {}
    if not seen.get("cases"):
        return None
    text = (f"power: {seen['at_target']} of {seen['cases']} timed cases could have shown a "
            f"{percent(seen['target_ratio'] - 1)} slowdown (twice the threshold; p < "
            f"{result['alpha']:g}, {percent(result.get('power', 0.8))} power, from the noise "
            "measured)")
    if seen["blind"]:
        more = ("more samples per side (--budget-s, --max-samples)"
                if (result.get("rules") or {}).get("interleaved")
                else "use `attnbench ab`, or more repeats")
        text += (f"; could detect only slowdowns above {seen['blind_above']:.2f}x for "
                 f"{seen['blind']} of {seen['cases']} cases: {more}")
    return text


def console_lines(result: dict) -> list[str]:
    """What the command prints: the verdict, the rules applied, what it could have seen, then
    each case that failed or improved."""
    lines = [headline(result) + f" ({result['matched']} cases matched, threshold "
             f"{percent(result['threshold'])})"]
    rules = rules_text(result)
    if rules:
        lines.append(rules)
    power = detectable_text(result)
    if power:
        lines.append(power)
    noisy = result["counts"].get("noisy", 0)
    if noisy:
        lines.append(f"{noisy} noisy: neither a change nor its absence shown, or unstable in a "
                     "run (never called a regression)")
    if result.get("forced"):
        lines.append("compared with --force although the runs differ: "
                     + describe_differences(result["differences"]))
    lines += incomplete_lines(result)
    for row in result["cases"]:
        if row["failing"] or row["verdict"] == "improvement":
            what = label(row["verdict"])
            if row.get("mem_verdict") and row["verdict"] not in FAILING:
                what = "memory growth"
            faster = row["verdict"] == "improvement"
            p = (f"p (faster) {p_text(row.get('p_faster'))}" if faster
                 else f"p (slower) {p_text(row.get('p_slower'))}")
            detail = (f"{duration(row.get('base_median_s'))} -> {duration(row.get('new_median_s'))}"
                      f", ratio {ratio_text(row)}, {p}, memory {memory_text(row)}"
                      if row.get("ratio") is not None else
                      f"{row['base_status']} -> {row['new_status']}: {row['reason']}")
            lines.append(f"  {what}: {row['case_id']}: {detail}")
    return lines


# ---- Markdown -----------------------------------------------------------------------------

def case_cells(row: dict) -> list[str]:
    status = (row["base_status"] or "—") + " → " + (row["new_status"] or "—")
    verdict = label(row["verdict"])
    if row.get("note"):
        verdict += f" ({row['note']})"
    if row.get("remeasured"):
        verdict += f" (re-measured; first pass: {label(row['first_pass_verdict'])})"
    if row.get("mem_verdict"):
        verdict += ", memory growth"
    if row.get("ratio") is None and row.get("reason") and row["verdict"] not in (
            "unchanged", "unsupported"):
        verdict += f": {row['reason']}"
    verdict = escape_md(verdict)
    return [code_md(row["case_id"]), escape_md(status), duration(row.get("base_median_s")),
            duration(row.get("new_median_s")), ratio_text(row), p_text(row.get("p_slower")),
            memory_text(row), f"**{verdict}**" if row["failing"] else verdict]


def case_header(result: dict) -> list[str]:
    confidence = result.get("confidence", CONFIDENCE)
    return ["case", "status", "base median", "new median", f"ratio [{percent(confidence)} CI]",
            "p (slower)", "memory", "verdict"]


def render_markdown(result: dict, title: str = "attnbench regression gate") -> str:
    """A pull-request comment: verdict first, the failures, the groups, everything folded."""
    icon = ":x:" if result["verdict"] == "fail" else ":white_check_mark:"
    header = case_header(result)
    confidence = result.get("confidence", CONFIDENCE)
    out = [f"## {icon} {escape_md(title)}: {headline(result)}", "",
           f"{code_md(result.get('base', 'base'))} → {code_md(result.get('new', 'new'))}: "
           f"{result['matched']} cases matched. A regression needs the {percent(confidence)} "
           f"interval of the ratio above {1 + result['threshold']:.3g} (Welch's t over the "
           f"repeats' medians, with p < {result['alpha']:g}; for single runs the "
           f"{percent(confidence)} bootstrap interval of "
           f"the median ratio, p < {result['alpha']:g} by Mann-Whitney U and the run-to-run "
           f"allowance) and a slowdown above the clocks' measured resolution per call; memory "
           f"growth: > {percent(result['mem_threshold'])} and > {fmt_mib(MEM_FLOOR_BYTES)} MiB.",
           ""]
    power = detectable_text(result)
    if power:
        out += [escape_md(power[0].upper() + power[1:]) + ".", ""]
    rules = rules_text(result)
    if rules:
        out += [escape_md(rules[0].upper() + rules[1:]) + ".", ""]
    if result.get("differences"):
        how = "compared with --force" if result.get("forced") else "sides of the A/B"
        out += [f"> Runs differ ({how}): "
                f"{escape_md(describe_differences(result['differences']))}", ""]
    out += [f"> :warning: {escape_md(line)}" for line in incomplete_lines(result)]
    if incomplete_lines(result):
        out.append("")
    summary = count_text(result["counts"], (*VERDICT_ORDER, "memory_growth"))
    again = result.get("remeasured")
    out += [f"**Cases:** {summary}" + (f"; {len(again)} flagged in the first pass and measured "
                                       "again, the second measurement decides" if again else ""), ""]
    failing = [r for r in result["cases"] if r["failing"]]
    if failing:
        out += ["### Regressions and failures", "",
                md_table(header, [case_cells(r) for r in failing]), ""]
    better = [r for r in result["cases"] if r["verdict"] == "improvement"]
    if better:
        out += ["### Improvements", "", md_table(header, [case_cells(r) for r in better]), ""]
    if result["groups"]:
        rows = [[code_md(g["impl"]), escape_md(g["dtype"]), g["cases"],
                 "-" if g["geomean_ratio"] is None else f"{g['geomean_ratio']:.3f}",
                 g["regressions"], g["improvements"], g["noisy"]] for g in result["groups"]]
        out += ["### By implementation and dtype (geometric mean of new/base)", "",
                md_table(["impl", "dtype", "cases", "geomean ratio", "regressions",
                          "improvements", "noisy (not averaged)"], rows), ""]
    order = {v: i for i, v in enumerate(VERDICT_ORDER)}
    rows = sorted(result["cases"], key=lambda r: (not r["failing"], order.get(r["verdict"], 99),
                                                  r["case_id"]))
    out += ["<details><summary>All cases</summary>", "",
            md_table(header, [case_cells(r) for r in rows]), "", "</details>", ""]
    return "\n".join(out)
