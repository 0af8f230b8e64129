"""The README is what a newcomer types from: every `attnbench` command in its code blocks parses,
every suite it names exists, every extra its pip lines install exists (and the install line
of the default suite installs every extra that suite's implementations need), and every link
into docs/ resolves, anchors included."""
from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest

from harness import registry, spec
from harness.cli import build_parser
from harness.cli.args import UsageError

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
EXTRA = re.compile(r"(?:\.|attnbench)\[([\w,-]+)\]")  # .[a,b] or attnbench[a]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def shell_lines(text: str) -> list[str]:
    """The command lines of the shell blocks, continuations joined (console output goes in
    `text` blocks)."""
    lines = []
    for language, body in code_blocks(text):
        if language in ("bash", "sh", "shell"):
            lines += [line for line in body.replace("\\\n", " ").splitlines() if line.strip()]
    return lines


def attnbench_commands(text: str) -> list[tuple[str, list[str]]]:
    """(the line, the arguments after `attnbench`) of each attnbench command: commands chained
    with && ; or | each count, environment assignments before them are skipped."""
    found = []
    for line in shell_lines(text):
        tokens = shlex.split(line, comments=True)
        command: list[str] = []
        for token in [*tokens, "&&"]:
            if token in ("&&", "||", ";", "|"):
                if "attnbench" in command:
                    found.append((line, command[command.index("attnbench") + 1:]))
                command = []
            else:
                command.append(token)
    return found


def parse(args: list[str]):
    try:
        return build_parser().parse_args(args)
    except SystemExit as exc:  # argparse's own exits (--help, --version)
        raise AssertionError(f"exited {exc.code}") from None


def extras_declared() -> set[str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return set(data["project"]["optional-dependencies"])


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.MULTILINE | re.DOTALL)
    return {github_anchor(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)}


README_TEXT = README.read_text(encoding="utf-8")
COMMANDS = attnbench_commands(README_TEXT)


def test_the_readme_is_short_and_has_commands_to_check():
    assert len(README_TEXT.splitlines()) <= 260
    assert len(COMMANDS) >= 10, COMMANDS
    unlabelled = [body[:60] for language, body in code_blocks(README_TEXT) if not language]
    assert not unlabelled, f"blocks with no language, so not checked as commands: {unlabelled}"


@pytest.mark.parametrize(("line", "args"), COMMANDS, ids=[" ".join(a) for _, a in COMMANDS])
def test_every_attnbench_command_in_the_readme_parses(line, args):
    try:
        parse(args)
    except (UsageError, AssertionError) as exc:  # the one line names the bad option
        pytest.fail(f"README: {line!r} does not parse: {exc}")


def test_every_suite_the_readme_names_exists():
    named = {getattr(parse(args), "suite", None) for _, args in COMMANDS} - {None}
    prose = re.sub(r"\([^)]*\)", "", " ".join(README_TEXT.split()))  # not the descriptions
    listed = prose[prose.index("Built-in suites:"):]
    listed = listed[:listed.index("[")]
    named |= set(re.findall(r"`([\w.-]+)`", listed))
    named |= set(re.findall(r"suites/([\w.-]+)\.toml", README_TEXT))
    assert {"default", "smoke"} <= named and len(named) >= 6, named
    missing = sorted(n for n in named if not spec.resolve_suite_path(n).is_file())
    assert not missing, f"README names suites that do not exist: {missing}"


def test_every_extra_the_readme_installs_exists():
    pip_lines = [line for line in README_TEXT.splitlines() if "pip install" in line]
    installed = {e for line in pip_lines for group in EXTRA.findall(line) for e in group.split(",")}
    assert {"all", "jax"} <= installed, installed
    unknown = sorted(installed - extras_declared())
    assert not unknown, f"README installs extras pyproject.toml does not declare: {unknown}"


def test_the_default_suites_install_line_installs_what_its_implementations_need():
    """The line that installs and runs the default suite leaves no implementation of it
    "not installed" for want of an extra."""
    line = next(line for line in shell_lines(README_TEXT)
                if "pip install" in line and re.search(r"attnbench run\s*(#|$)", line))
    installed = {e for group in EXTRA.findall(line) for e in group.split(",")}
    suite = tomllib.loads((ROOT / "suites" / "default.toml").read_text())
    adapters = registry.adapters()
    needed = {e for impl in suite["sweep"]["impls"]
              for group in EXTRA.findall(adapters[impl].install_hint) for e in group.split(",")}
    assert "jax" in needed
    assert needed <= installed, f"{line!r} lacks the extras {sorted(needed - installed)}"


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_local_link_resolves(page):
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.MULTILINE | re.DOTALL)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"\w+:", target):
            continue  # a web address
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.is_file() or (anchor and file.suffix == ".md" and anchor not in anchors(file)):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: links that lead nowhere: {broken}"


def test_the_readme_links_every_docs_page_and_shows_the_report():
    linked = set(LINK.findall(README_TEXT))
    pages = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert pages and not pages - linked, f"docs pages the README does not link: {pages - linked}"
    assert "docs/report.png" in linked
    assert (ROOT / "docs" / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_checks_catch_a_bad_command_a_missing_suite_and_a_broken_anchor():
    [(_, args)] = attnbench_commands("```bash\nX=1 attnbench run nosuch --nosuch-option  # c\n```\n")
    assert args == ["run", "nosuch", "--nosuch-option"]
    with pytest.raises(UsageError, match="nosuch-option"):
        parse(args)
    assert not spec.resolve_suite_path("nosuch").is_file()
    assert github_anchor("Scaling: how cost grows with N") == "scaling-how-cost-grows-with-n"
    assert "no-such-heading" not in anchors(ROOT / "docs" / "method.md")
