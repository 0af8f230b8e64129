"""What a run shows while it works and when it ends: a progress bar with the current case,
failures as they happen, then the answer (the fastest implementation that agreed with float64 for
each measured shape), what failed or could not run, and where the report is. The full latency,
compile-time and scaling tables are the report's (and `--verbose`'s). Plain lines when not on a
terminal (CI logs)."""
from __future__ import annotations

import os
from collections import Counter

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from harness.analysis import stability, summary
from harness.cli.console import plain_console, styled
from harness.constants import FAILED_STATUSES

MAX_CROSSOVERS_SHOWN = 8
MAX_UNSTABLE_SHOWN = 5
MAX_FAILURES_SHOWN = 8
STATUS_STYLE = {"ok": "green", "unsupported": "dim", "mismatch": "bold red", "error": "bold red",
                "timeout": "red", "oom": "red"}


class RunDisplay:
    """`cases` planned, each measured `repeats` times; `earlier`: the records a resumed run has.
    The counter counts cases (per pass when there are repeats); a figure measured again at the
    end is shown as a re-measurement of its case, never as one more case."""

    def __init__(self, cases: int, repeats: int = 1, earlier: dict[str, dict] | None = None,
                 quiet: bool = False):
        from harness.run.runner import repeats_of

        self.console = plain_console()
        self.cases, self.repeats, self.quiet = cases, repeats, quiet
        self.already = len(earlier or {})
        self.seen = {i: (r.get("started_at"), r.get("remeasured") or 0)
                     for i, r in (earlier or {}).items()}
        self.times = {i: repeats_of(r) for i, r in (earlier or {}).items()}
        self.per_pass = Counter(n for r in (earlier or {}).values()
                                for n in range(1, repeats_of(r) + 1))
        self.live = self.console.is_terminal and not quiet
        self.progress = Progress(TextColumn("{task.description}", markup=False), BarColumn(),
                                 TextColumn("{task.fields[counter]}", markup=False),
                                 TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=self.console, transient=True)
        # the bar's unit is a measurement; a case that did not succeed is not measured again
        done = sum(repeats if r.get("status") != "ok" else min(repeats_of(r), repeats)
                   for r in (earlier or {}).values())
        self.task = self.progress.add_task("starting", total=cases * repeats, counter="",
                                           completed=done)

    def __enter__(self):
        if self.live:
            self.progress.start()
        return self

    def __exit__(self, *exc):
        if self.live:
            self.progress.stop()

    def header(self, suite, out, todo: int, threads: int) -> None:
        if self.quiet:
            return
        resumed = f" ({self.already} already recorded)" if self.already else ""
        each = f", each in {self.repeats} fresh processes" if self.repeats > 1 else ""
        self.console.print(styled(("attnbench", "bold"), " suite ", (suite.name, "cyan"),
                                  f": {todo} cases to run{each}{resumed}, {threads} threads -> ",
                                  str(out)))
        load = os.getloadavg()[0]
        if load > 0.5 * (os.cpu_count() or 1):
            self.console.print(styled(("warning", "yellow"), f": the machine is busy (load "
                                      f"average {load:.1f} on {os.cpu_count()} cores): timings "
                                      "will be noisy"))

    def note(self, text: str) -> None:
        if not self.quiet:
            self.console.print(styled((text, "dim")))

    def start(self, case) -> None:
        if self.live:
            self.progress.update(self.task, description=case.case_id)

    def counter(self, record: dict) -> str:
        """"[   4/10]" for a case's measurement (", repeat 2/3" in a later pass), "[re-measure
        1/2]" for a figure measured again, "[final]" for a figure marked unstable at the end
        with nothing measured."""
        from harness.run.runner import MAX_REMEASURES

        case_id, remeasured = record["case_id"], record.get("remeasured") or 0
        before = self.seen.get(case_id, (None, 0))
        self.seen[case_id] = (record.get("started_at"), remeasured)
        if before == self.seen[case_id]:
            return "[final]"
        if remeasured > before[1]:
            return f"[re-measure {remeasured}/{MAX_REMEASURES}]"
        self.times[case_id] = nth = self.times.get(case_id, 0) + 1
        self.per_pass[nth] += 1
        if self.live:
            self.progress.advance(self.task, 1 if record["status"] == "ok" else
                                  max(1, self.repeats - nth + 1))
        repeat = f" repeat {nth}/{self.repeats}" if self.repeats > 1 else ""
        return f"[{self.per_pass[nth]:>4}/{self.cases}{repeat}]"

    def record(self, record: dict) -> None:
        label = self.counter(record)
        if self.live:
            self.progress.update(self.task, counter=label)
        if self.quiet:
            return
        status = record["status"]
        if stability.is_unstable(record):
            self.console.print(styled(f"{label} ", ("unstable", "yellow"),
                                      f"    {record['case_id']}  {summary.median_text(record)} ms: "
                                      f"{record['instability']}"), soft_wrap=True)
        elif status in FAILED_STATUSES or not self.live:
            style = STATUS_STYLE.get(status, "")
            what = summary.median_text(record) + " ms" if status == "ok" else record["reason"]
            self.console.print(styled(f"{label} ", (f"{status:<11}", style),
                                      f" {record['case_id']}  {what}"), soft_wrap=True)

    def summary(self, done, out, verbose: bool = False) -> None:
        """The end of a run (`done`: harness.report.finish.Finished): with `verbose` the full
        tables first; then the answer, failures, what did not run, the reports."""
        records = done.records
        if verbose:
            self.tables(records, done.fits, done.crossovers)
        if done.answers:
            self.console.print(answer_table(done.answers, records))
        self.failures(records)
        for impl, reason in sorted(summary.reasons_not_run(records).items()):
            self.console.print(styled((f"not run: {impl}: {reason}", "dim")), soft_wrap=True)
        counts = summary.status_counts(records)
        parts = [f"{n} {s}" for s, n in counts.items() if n]
        self.console.print(f"{len(records)} cases: {', '.join(parts)}")
        self.unstable(records)
        self.math_fallbacks(records)
        for path in done.reports:
            self.console.print(f"report: {path}")
        if not verbose:
            self.console.print(styled(("latency, bandwidth, compile-time and scaling tables: in "
                                       "the report, or on the console with --verbose", "dim")))
        self.console.print(styled("run directory: ", (str(out), "bold")))

    def tables(self, records: list[dict], fit_rows=(), crossings=()) -> None:
        """The full tables the report also has: latency, bandwidth, compile time, scaling."""
        header, rows = summary.latency_table(records)
        table = Table(title="median latency (ms)", title_justify="left")
        for name in header:
            table.add_column(name, justify="right" if name.startswith("N=") else "left",
                             no_wrap=True)
        for row in rows:
            table.add_row(*[styled((c, "bold red")) if c in ("MISMATCH", "ERROR", "TIMEOUT", "OOM")
                            else c for c in row])
        if rows:
            self.console.print(table)
        self.bandwidth(records)
        self.compile_times(records)
        self.scaling(list(fit_rows), list(crossings))

    def failures(self, records: list[dict]) -> None:
        """The cases the user must look at, a few, the rest counted (the report has them all)."""
        failed = summary.failures(records)
        for r in failed[:MAX_FAILURES_SHOWN]:
            self.console.print(styled((r["status"].upper(), STATUS_STYLE.get(r["status"], "")),
                                      f" {r['case_id']}: {r.get('reason') or ''}"),
                               soft_wrap=True)
        if len(failed) > MAX_FAILURES_SHOWN:
            self.console.print(f"... and {len(failed) - MAX_FAILURES_SHOWN} more failed cases "
                               "in the report")

    def unstable(self, records: list[dict]) -> None:
        advice = stability.advice(records)
        if not advice:
            return
        bad = stability.unstable(records)
        for r in bad[:MAX_UNSTABLE_SHOWN]:
            self.console.print(f"~ {r['case_id']}: {r['instability']}", soft_wrap=True)
        if len(bad) > MAX_UNSTABLE_SHOWN:
            self.console.print(f"~ ... and {len(bad) - MAX_UNSTABLE_SHOWN} more in the report")
        self.console.print(styled(("unstable", "yellow"), ": ", advice), soft_wrap=True)

    def math_fallbacks(self, records: list[dict]) -> None:
        """Where SDPA's dispatcher ran its unfused math path: those times are not a fused
        kernel's, and nothing else on the console would say so."""
        for fallback in summary.math_fallbacks(records):
            self.console.print(styled(("math fallback", "yellow"), ": ", fallback["text"]),
                               soft_wrap=True)

    def bandwidth(self, records: list[dict]) -> None:
        """GB/s of the memory-bound configurations (decode), where FLOP/s alone misleads."""
        header, rows = summary.bandwidth_table(records)
        if rows:
            self.console.print(self.sweep_table(
                "bandwidth of memory-bound cases: GB/s (% of the measured copy bandwidth)",
                header, rows))

    @staticmethod
    def sweep_table(title: str, header: list[str], rows: list[list[str]]) -> Table:
        """A rich table of a (header, rows) sweep table, lengths right-aligned."""
        table = Table(title=title, title_justify="left")
        for name in header:
            table.add_column(name, justify="right" if name.startswith("N=") else "left",
                             no_wrap=True)
        for row in rows:
            table.add_row(*[styled(c) for c in row])
        return table

    def compile_times(self, records: list[dict]) -> None:
        """compile_s of compiled and jitted code, apart from the latencies."""
        from harness.report.tables import compile_times

        header, rows = compile_times(records)
        if rows:
            self.console.print(self.sweep_table(
                "compile time (s): the first call, never in the latency", header, rows))

    def scaling(self, fit_rows: list[dict], crossings: list[dict]) -> None:
        """The exponents (one only where the points follow one power law), the local exponents
        between neighbouring seq_lens, and the significant crossovers, a few per
        configuration."""
        from rich.text import Text

        from harness.analysis.crossovers import PER_CONFIG_SHOWN, crossover_text, group
        from harness.analysis.scaling import (FIT_POINTS, MAX_HALF_WIDTH, NO_POWER_LAW,
                                              format_fits, format_local)

        judged = [f for f in fit_rows if f["exponent"] is not None or f.get("power_law") is False]
        for title, (header, rows) in (
                (f"scaling: cost ~ N^k, fitted over the largest {FIT_POINTS} seq_lens where "
                 "they follow one power law", format_fits(judged)),
                ("local exponents k between neighbouring seq_lens (± its 95% interval)",
                 format_local([f for f in fit_rows if f.get("local")]))):
            if not rows:
                continue
            table = Table(title=title, title_justify="left")
            for name in header:
                table.add_column(name, no_wrap=True)
            for row in rows:
                table.add_row(*[Text(c) for c in row])
            self.console.print(table)
        if any(f.get("power_law") is False for f in judged):
            self.console.print(f"{NO_POWER_LAW}: the points miss one line by more than their "
                               "intervals allow, or the exponent is known only to more than "
                               f"±{MAX_HALF_WIDTH:g}; read the local exponents (scaling.json "
                               "has the test)",
                               markup=False, highlight=False, soft_wrap=True)
        picked = [c for _, found in group(crossings) for c in found[:PER_CONFIG_SHOWN]]
        for c in picked[:MAX_CROSSOVERS_SHOWN]:
            self.console.print("crossover: " + crossover_text(c), markup=False, highlight=False,
                               soft_wrap=True)
        hidden = len(crossings) - len(picked[:MAX_CROSSOVERS_SHOWN])
        if hidden:
            self.console.print(f"... and {hidden} more significant crossovers in scaling.json",
                               markup=False, highlight=False)


def answer_cells(answer: dict) -> list:
    """fastest, its median, margin over the runner-up, significant: one answer as table cells."""
    from harness.units import duration

    if not answer["recommended"]:
        why = Counter("unstable" if x["status"] == "ok" else x["status"]
                      for x in answer["implementations"])
        return [styled(("none qualifies", "bold red")), "", "",
                ", ".join(f"{n} {what}" for what, n in why.most_common())]
    best = styled((answer["recommended"], "bold"))
    median = duration(answer["median_s"])
    if answer["runner_up"] is None:
        return [best, median, "", "only one qualifies"]
    margin = f"{answer['margin']:.2f}x {answer['runner_up']}"
    if not answer["tie"]:
        return [best, median, margin, styled(("yes", "green"))]
    tied = answer["tied_with"]
    more = f" and {len(tied) - 1} more" if len(tied) > 1 else ""
    return [best, median, margin, styled(("no", "yellow"), f": tied with {tied[0]}{more}")]


def answer_table(answers: list[dict], records: list[dict]) -> Table:
    """One row per measured shape, grouped by configuration: the recommendation
    (harness.analysis.recommend) for each."""
    from harness.analysis.recommend import P_FASTER
    from harness.case import (REPLICATE_FIELDS, config_key, config_order, config_text,
                              label_axes, sweep_len)

    axes = [a for a in label_axes(records) if a not in REPLICATE_FIELDS]
    table = Table(title="the answer: the fastest implementation that agreed with float64",
                  title_justify="left", caption_justify="left",
                  caption=f"margin: the runner-up's median over the fastest's; significant: "
                  f"faster in at least {P_FASTER:.0%} of bootstrap resamples and beyond the "
                  "noise floor; unstable figures never count. Why each other one lost: "
                  "attnbench recommend --from RUN with the shape's options")
    for name in ("configuration", "N", "fastest", "median", "margin over", "significant"):
        table.add_column(name, justify="right" if name == "N" else "left", no_wrap=True)
    answers = sorted(answers, key=lambda a: (config_order(config_key(a["shape"])),
                                             sweep_len(a["shape"])))
    configs = [config_key(a["shape"]) for a in answers]
    for i, answer in enumerate(answers):
        first = i == 0 or configs[i] != configs[i - 1]
        last = i == len(answers) - 1 or configs[i] != configs[i + 1]
        table.add_row(styled(config_text(answer["shape"], axes)) if first else "",
                      str(sweep_len(answer["shape"])), *answer_cells(answer), end_section=last)
    return table
