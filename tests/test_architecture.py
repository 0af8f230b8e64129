"""The shape of the code, checked: packages by layer, imports pointing down, no cycles, no
private name used outside its module, small modules. Built from the source with `ast`, so lazy
imports inside functions count as much as those at the top."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 450
MAX_CLI_FUNCTION_LINES = 60  # the CLI parses, checks and calls one function per command
# Lower layers first; a module may import its own layer or a lower one, never a higher one.
LAYERS = (
    ("harness.constants", "harness.units"),
    ("harness.values",),
    ("harness.case",),
    ("harness.spec",),
    ("harness.problem", "harness.store", "harness.measure"),
    ("impls", "harness.registry"),
    ("harness.analysis",),  # pure functions of records: the runner may consult them (A/B)
    ("harness.run",),
    ("harness.report",),
    ("harness.cli",),
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources() -> dict[str, Path]:
    files = [*ROOT.joinpath("harness").rglob("*.py"), *ROOT.joinpath("impls").rglob("*.py")]
    return {module_name(p): p for p in files if "__pycache__" not in p.parts}


MODULES = sources()


def resolve(name: str) -> str | None:
    """The project module `name` refers to (a submodule, else its package), or None."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str) -> list[tuple[str, int, list[str]]]:
    """(imported project module, line, names taken from it) for every import in `module`."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = resolve(alias.name)
                if target:
                    found.append((target, node.lineno, []))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            for alias in node.names:
                sub = resolve(f"{base}.{alias.name}")
                if sub == f"{base}.{alias.name}":  # `from package import submodule`
                    found.append((sub, node.lineno, []))
                elif resolve(base):
                    found.append((resolve(base), node.lineno, [alias.name]))
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def layer_of(module: str) -> int:
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")


def package_of(module: str) -> str:
    """harness.run.ab -> harness.run; harness.spec -> harness.spec; impls.x -> impls."""
    parts = module.split(".")
    if parts[0] == "impls":
        return "impls"
    return ".".join(parts[:2])


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_graph_sees_the_imports_it_should():
    # a sanity check of the checker itself: known edges, lazy ones included
    targets = {t for t, _, _ in GRAPH["harness.run.execute"]}
    assert {"harness.measure.timer", "harness.problem.truth", "harness.run.limits"} <= targets
    assert "harness.run.profile" in {t for t, _, _ in GRAPH["harness.cli.profile"]}  # lazy


def test_every_module_has_a_layer_and_imports_point_down():
    wrong = [f"{m} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)}) at line {line}"
             for m, found in GRAPH.items() for t, line, _ in found
             if layer_of(t) > layer_of(m)]
    assert not wrong, "\n".join(wrong)


def test_nothing_outside_the_cli_imports_it():
    wrong = [f"{m} line {line}" for m, found in GRAPH.items() for t, line, _ in found
             if package_of(t) == "harness.cli" and package_of(m) != "harness.cli"]
    assert not wrong, "the CLI is imported by " + ", ".join(wrong)


def test_no_import_cycle_between_modules_or_packages():
    modules = {m: {t for t, _, _ in found if t != m} for m, found in GRAPH.items()}
    assert find_cycle(modules) is None, " -> ".join(find_cycle(modules) or [])
    packages: dict[str, set[str]] = {}
    for m, targets in modules.items():
        packages.setdefault(package_of(m), set()).update(
            package_of(t) for t in targets if package_of(t) != package_of(m))
    assert find_cycle(packages) is None, " -> ".join(find_cycle(packages) or [])


def test_no_private_name_is_used_outside_its_module():
    wrong = [f"{m} line {line} takes {name} from {t}" for m, found in GRAPH.items()
             for t, line, names in found for name in names
             if name.startswith("_") and not name.startswith("__")]
    for m, path in MODULES.items():  # module._name through an imported module
        tree = ast.parse(path.read_text())
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and resolve(node.module):
                aliases.update({a.asname or a.name: a.name for a in node.names})
            elif isinstance(node, ast.Import):
                aliases.update({(a.asname or a.name).split(".")[0]: a.name for a in node.names
                                if resolve(a.name)})
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                wrong.append(f"{m} line {node.lineno} uses {node.value.id}.{node.attr}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_small(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{MODULES[module]}: {lines} lines (at most {MAX_LINES})"


def long_functions(source: str, limit: int) -> list[tuple[str, int, int]]:
    """(name, first line, lines) of every function or method in `source` longer than `limit`
    lines, from its `def` to its last line."""
    return [(node.name, node.lineno, node.end_lineno - node.lineno + 1)
            for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > limit]


def test_cli_functions_stay_short():
    wrong = [f"{MODULES[m]}:{line} {name}: {lines} lines (at most {MAX_CLI_FUNCTION_LINES})"
             for m in sorted(MODULES) if package_of(m) == "harness.cli"
             for name, line, lines in long_functions(MODULES[m].read_text(),
                                                     MAX_CLI_FUNCTION_LINES)]
    assert not wrong, "the CLI is thin; move the work below it:\n" + "\n".join(wrong)


def test_the_checker_catches_a_cycle_and_an_upward_import():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert layer_of("harness.cli.run") > layer_of("harness.report.tables") > layer_of("harness.spec")
    assert long_functions("def f():\n" + "    x = 1\n" * 60, 60) == [("f", 1, 61)]
    assert long_functions("def f():\n" + "    x = 1\n" * 59, 60) == []


def layout_entries() -> dict[str, str]:
    """The layout section of docs/adapters.md as {entry: its text}: a line that starts at the
    margin ("harness/run/   one case's phases ...") opens an entry, indented lines go on with it."""
    page = (ROOT / "docs" / "adapters.md").read_text()
    layout = page[page.index("## Layout"):]
    block = layout[layout.index("```") + 3:layout.index("```", layout.index("```") + 3)]
    entries: dict[str, str] = {}
    entry = None
    for line in block.splitlines():
        if line.strip() and not line[0].isspace():
            entry = line.split()[0]
            entries[entry] = line[len(entry):]
        elif entry:
            entries[entry] += " " + line.strip()
    return entries


def names_word(text: str, name: str) -> bool:
    """Whether `text` names `name` as a whole word: "ab" is not named by "ab_worker"."""
    return re.search(rf"(?<![\w/.-]){re.escape(name)}(?![\w-])", text) is not None


def test_the_documented_layout_names_every_package_and_top_level_module():
    """The layout section of docs/adapters.md is the map a contributor reads: it names every
    package and every module at harness/'s top level, every module of a package in that
    package's entry, and every file in scripts/ in that folder's entry."""
    entries = layout_entries()
    layout = " ".join(f"{entry} {text}" for entry, text in entries.items())
    harness = ROOT / "harness"
    packages = sorted(p for p in harness.iterdir() if (p / "__init__.py").exists())
    names = [f"harness/{p.name}/" for p in packages]
    names += [p.name for p in harness.glob("*.py") if p.name != "__init__.py"]
    missing = [n for n in names if n not in layout]
    missing += [f"harness/{p.name}/{m.name}" for p in packages for m in sorted(p.glob("*.py"))
                if m.name != "__init__.py"
                and not names_word(entries.get(f"harness/{p.name}/", ""), m.stem)]
    missing += [f"scripts/{f.name}" for f in sorted((ROOT / "scripts").iterdir()) if f.is_file()
                and not names_word(entries.get("scripts/", ""), f.name)]
    assert not missing, f"docs/adapters.md's layout does not name {missing}"


def test_the_layout_check_reads_whole_names():
    assert names_word("A/B (ab, ab_worker)", "ab") and names_word("(ab_worker)", "ab_worker")
    assert not names_word("A/B (ab_worker)", "ab") and not names_word("summaries", "summary")
    assert not names_word("gpu-check.sh", "check") and names_word("gpu-check.sh: x", "gpu-check.sh")
