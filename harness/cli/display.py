"""What a run shows while it works and when it ends: a progress bar with the current case,
failures as they happen, then the latency table. Plain lines when not on a terminal (CI logs)."""
from __future__ import annotations

import os

from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Table

from harness.analysis import stability, summary
from harness.cli.console import plain_console, styled
from harness.constants import FAILED_STATUSES

MAX_CROSSOVERS_SHOWN = 8
MAX_UNSTABLE_SHOWN = 5
STATUS_STYLE = {"ok": "green", "unsupported": "dim", "mismatch": "bold red", "error": "bold red",
                "timeout": "red", "oom": "red"}


class RunDisplay:
    def __init__(self, total: int, already: int = 0, quiet: bool = False):
        self.console = plain_console()
        self.total, self.already, self.quiet = total, already, quiet
        self.done = already
        self.live = self.console.is_terminal and not quiet
        self.progress = Progress(TextColumn("{task.description}", markup=False), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=self.console, transient=True)
        self.task = self.progress.add_task("starting", total=total, completed=already)

    def __enter__(self):
        if self.live:
            self.progress.start()
        return self

    def __exit__(self, *exc):
        if self.live:
            self.progress.stop()

    def header(self, suite, out, todo: int, threads: int, repeats: int = 1) -> None:
        if self.quiet:
            return
        resumed = f" ({self.already} measurements already recorded)" if self.already else ""
        each = f", each in {repeats} fresh processes" if repeats > 1 else ""
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

    def record(self, record: dict) -> None:
        self.done += 1
        self.total = max(self.total, self.done)  # measuring a figure again adds to the plan
        if self.live:
            self.progress.update(self.task, completed=self.done, total=self.total)
        if self.quiet:
            return
        status = record["status"]
        if stability.is_unstable(record):
            self.console.print(styled(f"[{self.done:>4}/{self.total}] ", ("unstable", "yellow"),
                                      f"    {record['case_id']}  {summary.cell(record)} ms: "
                                      f"{record['instability']}"), soft_wrap=True)
        elif status in FAILED_STATUSES or not self.live:
            style = STATUS_STYLE.get(status, "")
            what = summary.cell(record) + " ms" if status == "ok" else record["reason"]
            self.console.print(styled(f"[{self.done:>4}/{self.total}] ", (f"{status:<11}", style),
                                      f" {record['case_id']}  {what}"), soft_wrap=True)

    def summary(self, records: list[dict], out, fit_rows=(), crossings=()) -> None:
        header, rows = summary.latency_table(records)
        table = Table(title="median latency (ms)", title_justify="left")
        for i, name in enumerate(header):
            table.add_column(name, justify="right" if name.startswith("N=") else "left",
                             no_wrap=True)
        for row in rows:
            table.add_row(*[styled((c, "bold red")) if c in ("MISMATCH", "ERROR", "TIMEOUT", "OOM")
                            else c for c in row])
        if rows:
            self.console.print(table)
        self.bandwidth(records)
        self.compile_times(records)
        for impl, reason in sorted(summary.not_run(records).items()):
            self.console.print(styled((f"not run: {impl}: {reason}", "dim")), soft_wrap=True)
        self.scaling(list(fit_rows), list(crossings))
        counts = summary.status_counts(records)
        parts = [f"{n} {s}" for s, n in counts.items() if n]
        self.console.print(f"{len(records)} cases: {', '.join(parts)}")
        advice = stability.advice(records)
        if advice:
            bad = stability.unstable(records)
            for r in bad[:MAX_UNSTABLE_SHOWN]:
                self.console.print(f"~ {r['case_id']}: {r['instability']}", soft_wrap=True)
            if len(bad) > MAX_UNSTABLE_SHOWN:
                self.console.print(f"~ ... and {len(bad) - MAX_UNSTABLE_SHOWN} more in the report")
            self.console.print(styled(("unstable", "yellow"), ": ", advice), soft_wrap=True)
        self.console.print(styled("run directory: ", (str(out), "bold")))

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

        if self.quiet:
            return
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
