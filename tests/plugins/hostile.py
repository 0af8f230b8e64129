"""Adapters whose names, reasons and errors carry console markup, HTML and Markdown: the
harness must show every one of them as the plain text it is."""
from __future__ import annotations

from tests.plugins.faulty import _NumpyFull

HOSTILE_TEXT = "[/] [bold red]x[/] <script>alert(1)</script> <img src=x onerror=alert(2)> </details> | *a* :smile:"


class BracketRaises(_NumpyFull):
    """Raises a library-style message holding a bracketed path and markup tags."""
    name = "hostile[/].raises"

    def compute(self, q, k, v):
        raise ValueError(f"cannot open [/tmp/x] {HOSTILE_TEXT}")


class BracketUnsupported(_NumpyFull):
    name = "hostile<b>.unsupported"

    def library_reasons(self, case):
        return [f"no kernel [/] for {HOSTILE_TEXT}"]


class BracketOk(_NumpyFull):
    name = "hostile[red].ok"


ADAPTERS = [BracketRaises(), BracketUnsupported(), BracketOk()]
