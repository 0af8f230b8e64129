"""The one console: it interprets nothing it is given. Library messages, reasons, adapter names
and paths contain square brackets and colons (`[/tmp/x]`, `:smile:`) that Rich would otherwise
read as markup or emoji codes, and one unbalanced `[/]` would abort the run. attnbench's own
styling is added explicitly with `styled`, so no text is ever parsed."""
from __future__ import annotations

from rich.console import Console
from rich.text import Text

CI_WIDTH = 160  # logs: do not squeeze tables to 80 columns


def plain_console(**kwargs) -> Console:
    """A console that reads no markup; Rich's own defaults decide colour, so NO_COLOR (and
    FORCE_COLOR, TERM=dumb) are honoured as everywhere else."""
    console = Console(markup=False, emoji=False, highlight=False, **kwargs)
    if not console.is_terminal:
        console.width = CI_WIDTH
    return console


def styled(*parts) -> Text:
    """Text from pieces that are plain strings or (string, style) pairs: `styled(("ok", "green"),
    " ", case_id)`; the strings are shown exactly as they are."""
    return Text.assemble(*[(str(p[0]), p[1]) if isinstance(p, tuple) else str(p) for p in parts])
