"""How the reports print a number or a piece of text: one place, so the HTML page, the Markdown
summary and the gate's comment show the same digits. Durations are `harness.units.duration`
(the one duration formatter); everything else is here.
"""
from __future__ import annotations

import math
import re

from harness.units import MIB


def fmt_mib(nbytes) -> str:
    if nbytes is None:
        return ""
    value = nbytes / MIB
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}" if value >= 0.01 else f"{value:.2g}"


def fmt_tflops(value) -> str:
    if value is None:
        return ""
    return f"{value:.3g}" if value >= 0.001 else f"{value:.2e}"


def fmt_pct(value) -> str:
    if value is None:
        return ""
    return f"{value:.1f}%" if value >= 0.1 else f"{value:.2g}%"


def fmt_ratio(value) -> str:
    if value is None:
        return ""
    if value >= 100:
        return f"{value:.0f}×"
    return f"{value:.2f}×" if value >= 0.1 else f"{value:.2g}×"


def percent(fraction) -> str:
    """A fraction as a percentage, as few digits as it needs: 0.95 -> 95%, 0.999 -> 99.9%."""
    return f"{fraction * 100:.3g}%"


def fmt_err(value) -> str:
    return "" if value is None else f"{value:.2e}"


def mask_name(causal) -> str:
    return "causal" if causal else "full"


def finite(value) -> float | None:
    """A finite number, or None (JSON null, NaN, inf, a bool, a string)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def plural(n: int, word: str) -> str:
    """'1 timeout', '2 timeouts', '2 mismatches', '3 out of memory'."""
    if word == "oom":
        return f"{n} out of memory"
    if word == "mismatch":
        return f"{n} mismatch" + ("es" if n != 1 else "")
    return f"{n} {word}" + ("s" if n != 1 else "")


# ---- Markdown ---------------------------------------------------------------------------

# Characters that start Markdown (GitHub-flavoured) markup anywhere in a line: emphasis, code,
# links and images, raw HTML and entities, strikethrough, math, table cells, and the backslash.
_MARKUP = re.compile(r"([\\`*\[\]|~$])")
# HTML as entities, not backslashes: a renderer that passes raw HTML (many do, GitHub does not)
# shows an entity as the character and never reads it as a tag.
_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
# An underscore emphasises only at a word's edge (`_a_`), never inside one (max_abs_err).
_EDGE_UNDERSCORE = re.compile(r"(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")
# At the start of a line these make a heading, a list item or a rule ("# a", "- a", "1. a").
_LINE_START = re.compile(r"^(?:#+(?=\s|$)|[-+](?=\s)|\d+(?=[.)](?:\s|$)))")


def md_table(header: list[str], rows: list[list], numeric=()) -> str:
    """A GitHub-flavoured table of cells that are Markdown already (escaped where they hold
    outside text: `escape_md`, `code_md`); the sweep's columns (N=...) and `numeric` ones are
    right-aligned."""
    def align(h):
        return "---:" if h.startswith("N=") or h in numeric else "---"
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align(h) for h in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def escape_md(text) -> str:
    """`text` (a reason, a case id, a library's message) as Markdown that prints as the plain
    text it is, in a table cell or a paragraph: on one line, with no markup of its own."""
    text = " ".join(str(text).split())
    text = "".join(_HTML.get(ch, ch) for ch in text)
    text = _MARKUP.sub(r"\\\1", text)
    text = _EDGE_UNDERSCORE.sub(r"\\_", text)
    match = _LINE_START.match(text)
    if match:
        cut = match.end() if text[0].isdigit() else 0
        text = text[:cut] + "\\" + text[cut:]
    return text


def code_md(text) -> str:
    """`text` as an inline code span that is safe in a table cell: on one line, pipes escaped
    (GitHub splits cells before it reads code spans), fenced by more backticks than it holds.
    Text with HTML characters is escaped instead: inside a code span an entity would show as
    itself, and a renderer that passes HTML might read the raw characters."""
    if any(ch in str(text) for ch in _HTML):
        return escape_md(text)
    text = " ".join(str(text).split()).replace("|", "\\|")
    ticks = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (ticks + 1)
    pad = " " if ticks or text.startswith(" ") else ""
    return f"{fence}{pad}{text}{pad}{fence}"
