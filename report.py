"""`python report.py RUN_DIR`: render the reports of a finished (or interrupted) run."""
import sys

from harness.cli import main

if __name__ == "__main__":
    sys.exit(main(["report", *sys.argv[1:]]))
