"""`attnbench export RUN --format csv|github-action-benchmark|bencher [--out FILE]`: a run's
ok cases for a benchmark tracker (harness.report.export), on stdout or into FILE."""
from __future__ import annotations

import sys

from harness.cli.args import EXIT_OK, output_file

FORMAT_NAMES = "csv, github-action-benchmark or bencher"  # harness.report.export.FORMATS


def cmd_export(args) -> int:
    from harness.report.export import export_run
    from harness.store import require_run_dir

    run_dir = require_run_dir(args.run)
    out = output_file(args.out, "--out")
    text = export_run(run_dir, args.format)
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")
        print(f"wrote {out}", file=sys.stderr)
    return EXIT_OK


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="write a run's ok cases for a benchmark tracker "
                       f"({FORMAT_NAMES})")
    p.add_argument("run", metavar="RUN", help="a directory written by `attnbench run`")
    p.add_argument("--format", default="csv",
                   help=f"{FORMAT_NAMES} (github-action-benchmark: its customSmallerIsBetter "
                        "tool; bencher: Bencher Metric Format JSON); default: csv")
    p.add_argument("--out", metavar="FILE", help="write to FILE instead of stdout")
    p.set_defaults(func=cmd_export)
