"""`attnbench list`: every implementation, and whether it can run here."""
from __future__ import annotations

import os

from harness.cli.args import EXIT_OK


def _static_availability(adapter, devices: list[str]) -> tuple[list[str], str]:
    """(devices it can use here, a status line) from what is installed, without imports."""
    missing = adapter.missing_packages()
    usable = [d for d in adapter.devices if d in devices]
    if missing:
        return [], f"no: {', '.join(missing)} not installed ({adapter.install_hint})"
    if not usable:
        return [], f"no: runs on {', '.join(adapter.devices)}; none on this machine"
    return usable, f"installed ({', '.join(usable)})"


def _probe_all(adapters, devices: list[str]) -> dict[str, str]:
    """Ask each library, in its own worker, whether it runs a typical float32 case here."""
    from harness.run.process import WorkerGone
    from harness.run.worker import Worker
    from harness.spec import Case
    from harness.store import physical_cores

    verdicts = {}
    by_family: dict[str, list] = {}
    for adapter in adapters:
        usable, _ = _static_availability(adapter, devices)
        if usable:
            by_family.setdefault(adapter.framework, []).append((adapter, usable))
    for family, members in by_family.items():
        try:
            worker = Worker(family, physical_cores(), os.devnull)
        except WorkerGone as gone:
            verdicts.update({a.name: f"no: {gone.reason}" for a, _ in members})
            continue
        for adapter, usable in members:
            dtype = "float32" if "float32" in adapter.dtypes else adapter.dtypes[0]
            answers = {d: worker.probe(Case(impl=adapter.name, level=adapter.level, device=d,
                                            dtype=dtype, seq_len=128, head_dim=64)) for d in usable}
            ok = [d for d, reasons in answers.items() if not reasons]
            verdicts[adapter.name] = (f"yes ({', '.join(ok)})" if ok else
                                      "no: " + "; ".join(r for rs in answers.values() for r in rs))
        worker.stop()
    return verdicts


def cmd_list(args) -> int:
    from rich.table import Table

    from harness import registry
    from harness.cli.console import plain_console, styled
    from harness.measure.devices import available_devices

    console = plain_console()
    devices = available_devices()
    adapters = [a for _, a in sorted(registry.adapters().items())]
    probed = _probe_all(adapters, devices) if args.probe else {}
    title = f"attnbench implementations (devices here: {', '.join(devices)})"
    table = Table(title=title, title_justify="left")
    table.add_column("name", no_wrap=True)
    for column in ("framework", "level", "devices", "dtypes"):
        table.add_column(column)
    table.add_column("checked with the library (float32, N=128, D=64)" if args.probe
                     else "available here (--probe asks the library)", overflow="fold")
    for adapter in adapters:
        _, status = _static_availability(adapter, devices)
        status = probed.get(adapter.name, status)
        style = "green" if status.startswith(("yes", "installed")) else "yellow"
        table.add_row(adapter.name, adapter.framework, adapter.level, ", ".join(adapter.devices),
                      ", ".join(adapter.dtypes), styled((status, style)))
    console.print(table)
    return EXIT_OK


def add_parser(sub) -> None:
    p_list = sub.add_parser("list", help="show every implementation and whether it runs here")
    p_list.add_argument("--probe", action="store_true",
                        help="ask each library in a worker process (slower, exact)")
    p_list.set_defaults(func=cmd_list)
