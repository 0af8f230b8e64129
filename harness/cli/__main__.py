"""`python -m harness.cli ...` is `attnbench ...`."""
import sys

from harness.cli import main

sys.exit(main())
