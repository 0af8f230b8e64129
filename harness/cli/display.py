"""What a run shows while it works and when it ends: a progress bar with the current case,
failures as they happen, then the latency table. Plain lines when not on a terminal (CI logs)."""
from __future__ import annotations

import os

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Table

from harness.analysis import stability, summary
from harness.constants import FAILED_STATUSES

MAX_CROSSOVERS_SHOWN = 8
MAX_UNSTABLE_SHOWN = 5
STATUS_STYLE = {"ok": "green", "unsupported": "dim", "mismatch": "bold red", "error": "bold red",
                "timeout": "red", "oom": "red"}


class RunDisplay:
    def __init__(self, total: int, already: int = 0, quiet: bool = False):
        self.console = Console()
        if not self.console.is_terminal:
            self.console.width = 160  # CI logs: do not squeeze the table to 80 columns
        self.total, self.already, self.quiet = total, already, quiet
        self.done = already
        self.live = self.console.is_terminal and not quiet
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
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
        self.console.print(f"[bold]attnbench[/] suite [cyan]{suite.name}[/]: {todo} cases to run"
                           f"{each}{resumed}, {threads} threads -> {out}")
        load = os.getloadavg()[0]
        if load > 0.5 * (os.cpu_count() or 1):
            self.console.print(f"[yellow]warning[/]: the machine is busy (load average {load:.1f} "
                               f"on {os.cpu_count()} cores): timings will be noisy")

    def note(self, text: str) -> None:
        if not self.quiet:
            self.console.print(f"[dim]{text}[/]")

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
            self.console.print(f"[{self.done:>4}/{self.total}] [yellow]unstable[/]    ",
                               end="", highlight=False)
            self.console.print(f"{record['case_id']}  {summary.cell(record)} ms: "
                               f"{record['instability']}", markup=False, highlight=False,
                               soft_wrap=True)
        elif status in FAILED_STATUSES or not self.live:
            style = STATUS_STYLE.get(status, "")
            what = summary.cell(record) + " ms" if status == "ok" else record["reason"]
            self.console.print(f"[{self.done:>4}/{self.total}] [{style}]{status:<11}[/] "
                               f"{record['case_id']}  {what}", highlight=False, soft_wrap=True)

    def summary(self, records: list[dict], out, fit_rows=(), crossings=()) -> None:
        header, rows = summary.latency_table(records)
        table = Table(title="median latency (ms)", title_justify="left")
        for i, name in enumerate(header):
            table.add_column(name, justify="right" if name.startswith("N=") else "left",
                             no_wrap=True)
        for row in rows:
            table.add_row(*[f"[bold red]{c}[/]" if c in ("MISMATCH", "ERROR", "TIMEOUT", "OOM")
                            else c for c in row])
        if rows:
            self.console.print(table)
        for impl, reason in sorted(summary.not_run(records).items()):
            self.console.print(f"[dim]not run: {impl}: {reason}[/]", soft_wrap=True)
        self.scaling(list(fit_rows), list(crossings))
        counts = summary.status_counts(records)
        parts = [f"{n} {s}" for s, n in counts.items() if n]
        self.console.print(f"{len(records)} cases: {', '.join(parts)}")
        advice = stability.advice(records)
        if advice:
            bad = stability.unstable(records)
            for r in bad[:MAX_UNSTABLE_SHOWN]:
                self.console.print(f"~ {r['case_id']}: {r['instability']}", markup=False,
                                   highlight=False, soft_wrap=True)
            if len(bad) > MAX_UNSTABLE_SHOWN:
                self.console.print(f"~ ... and {len(bad) - MAX_UNSTABLE_SHOWN} more in the report",
                                   highlight=False)
            self.console.print("[yellow]unstable[/]: ", end="")
            self.console.print(advice, markup=False, highlight=False, soft_wrap=True)
        self.console.print(f"run directory: [bold]{out}[/]")

    def scaling(self, fit_rows: list[dict], crossings: list[dict]) -> None:
        """The fitted exponents (time and memory against seq_len), and where orders flip."""
        from harness.analysis.scaling import FIT_POINTS, format_fits

        if self.quiet:
            return
        header, rows = format_fits([f for f in fit_rows if f["exponent"] is not None])
        if rows:
            table = Table(title=f"scaling: cost ~ N^k, fitted over the largest {FIT_POINTS} "
                                "seq_lens", title_justify="left")
            for name in header:
                table.add_column(name, no_wrap=True)
            for row in rows:
                table.add_row(*row)
            self.console.print(table)
        shown = crossings[:MAX_CROSSOVERS_SHOWN]
        for c in shown:
            self.console.print(f"crossover ({c['metric']}, {c['dtype']}, "
                               f"{'causal' if c['causal'] else 'full'}): {c['faster_above']} "
                               f"overtakes {c['faster_below']} near seq_len {c['seq_len']}",
                               highlight=False)
        if len(crossings) > len(shown):
            self.console.print(f"... and {len(crossings) - len(shown)} more crossovers in "
                               "scaling.json", highlight=False)

