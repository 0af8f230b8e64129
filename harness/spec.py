"""Case (one measurement) and Suite (a TOML sweep that expands into Cases).

A bad suite fails here, before anything runs, with one line naming the file, the key and what
was expected (SuiteError). Everything downstream can trust a Case.
"""
from __future__ import annotations

import dataclasses
import importlib.resources
import itertools
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from harness import values
from harness.case import (BIASES, BOTTOM_RIGHT, CAUSAL_ALIGNS, CONSTANT, DEFAULTS, FIELD_NAMES,
                          LAYOUTS, LENGTHS, TOP_LEFT, Case)
from harness.constants import DTYPES, LEVELS, MODES, NORMS

# The built-in suites are the `suites` package's data, found the same way in a checkout and in an
# installed wheel (on disk, as wheels install, a Path).
SUITES_DIR = importlib.resources.files("suites")


def builtin_suite_names() -> list[str]:
    """The names `attnbench run NAME` takes without a path, for messages and the docs' tests."""
    return sorted(p.name.removesuffix(".toml") for p in SUITES_DIR.iterdir()
                  if p.name.endswith(".toml"))


@dataclass(frozen=True)
class TimingSettings:
    """How one case is timed (harness.measure.timer says how each setting is used)."""

    warmup_s: float = 0.1
    min_samples: int = 5
    max_samples: int = 1000
    target_ci: float = 0.02  # half-width of the median's 95% CI, relative to the median
    budget_s: float = 2.0  # sampling time per case after warm-up
    min_sample_s: float = 5e-5  # calls shorter than this are timed in blocks
    timeout_s: float = 300.0  # whole case (prepare, check, warm-up, sampling), enforced by the runner
    repeats: int = 1  # fresh worker processes each case is measured in (harness.measure.repeats)
    cuda_graphs: bool = False  # replay each case as a CUDA graph (torch on CUDA only: clocks)


class SuiteError(values.BadValue):
    """A suite or filter the user got wrong; str() is the one line to show them."""


# A torch function run as an implementation (impls.torch_function), named MODULE:FUNCTION in
# `sweep.fn` and `--fn`: ASCII dotted names only, so its implementation name, FUNCTION_PREFIX
# and the path, is safe in a case id (no "/") and in a file name.
_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
FUNCTION_PATH = values.Kind(
    "a torch function as MODULE:FUNCTION in ASCII dotted names, e.g. mypkg.attn:attention",
    lambda v: isinstance(v, str) and re.fullmatch(f"{_DOTTED}:{_DOTTED}", v) is not None)
FUNCTION_PREFIX = "fn:"


def function_impl(path: str) -> str:
    """The implementation name of a function path: "mypkg.attn:attention" ->
    "fn:mypkg.attn:attention"."""
    return FUNCTION_PREFIX + path


def function_path(impl: str) -> str | None:
    """The function path an implementation name runs (`function_impl`'s inverse); None for
    any other implementation."""
    return impl.removeprefix(FUNCTION_PREFIX) if impl.startswith(FUNCTION_PREFIX) else None


# Sweep keys: name -> the kind of value each element must be (harness.values)
SWEEP_KEYS = {
    "impls": values.Kind("a list of implementation names (see `attnbench list`)",
                         lambda v: isinstance(v, str)),
    "fn": FUNCTION_PATH,  # [sweep] only: each joins `impls` as function_impl(path)
    "level": values.one_of(LEVELS),
    "mode": values.one_of(MODES),
    "device": values.DEVICE,
    "dtype": values.one_of(DTYPES),
    "batch": values.DIMENSION,
    "heads": values.DIMENSION,
    "seq_len": values.DIMENSION,
    "seq_len_kv": values.DIMENSION,
    "head_dim": values.DIMENSION,
    "causal": values.BOOL,
    "seed": values.SEED,
    "padding": values.PADDING,
    "norm": values.one_of(NORMS),
    "ffn_mult": values.DIMENSION,
    "kv_heads": values.DIMENSION,
    "causal_align": values.one_of(CAUSAL_ALIGNS),
    "lengths": values.one_of(LENGTHS),
    "layout": values.one_of(LAYOUTS),
    "window": values.WINDOW,
    "alibi": values.BOOL,
    "bias": values.one_of(BIASES),
    "softcap": values.SOFTCAP,
}
# Timing keys: the kind of each TimingSettings field (the CLI's --budget and friends use these)
TIMING_KEYS = {"warmup_s": values.SECONDS, "min_samples": values.COUNT,
               "max_samples": values.COUNT, "target_ci": values.FRACTION,
               "budget_s": values.SECONDS, "min_sample_s": values.SECONDS,
               "timeout_s": values.SECONDS, "repeats": values.COUNT,
               "cuda_graphs": values.BOOL}
# A swept axis left out of the suite takes the Case field's default (seq_len_kv: as seq_len).
SWEEP_DEFAULTS = {name: [DEFAULTS[name]] for name in FIELD_NAMES
                  if name in DEFAULTS and name not in ("seq_len", "seq_len_kv")}
TOP_KEYS = {"name", "description", "sweep", "variants", "timing"}


@dataclass
class Suite:
    """A named sweep plus how to time it. `cases()` is the cartesian product, in a stable order."""

    name: str
    path: Path | None
    sweep: dict[str, list]
    timing: TimingSettings = field(default_factory=TimingSettings)
    description: str = ""
    # [[variants]]: each a partial sweep laid over `sweep` (one modifier at a time, say); the
    # cases are every variant's product, in order
    variants: tuple[dict[str, list], ...] = ({},)

    def sweeps(self) -> list[dict[str, list]]:
        return [{**self.sweep, **variant} for variant in self.variants]

    def cases(self) -> list[Case]:
        """Every valid combination (see `case_problem`): an axis that one of the sweep's levels
        cannot take (norm for a kernel, say) keeps its default at that level."""
        axes = ["impls" if name == "impl" else name for name in FIELD_NAMES]
        out = []
        for sweep in self.sweeps():
            values = [sweep.get(a, [0] if a == "seq_len_kv" else None) for a in axes]
            for combo in itertools.product(*values):
                params = dict(zip(axes, combo))
                params["impl"] = params.pop("impls")
                case = Case(**params)
                if case_problem(case) is None:
                    out.append(case)
        return list(dict.fromkeys(out))  # square cases of both alignments are one problem


MODIFIERS = ("window", "alibi", "bias", "softcap")  # score modifiers: kernel-level problems


def case_problem(case: Case) -> tuple[str, str] | None:
    """(sweep key, why) when no implementation can be asked this case, else None: the rules of
    what a case may combine, in one place for suites, the CLI and adapters."""
    for rule in CASE_RULES:
        problem = rule(case)
        if problem:
            return problem
    return None


def _layer_axes(case: Case):
    if case.level != "encoder":
        for key, default in (("norm", "post"), ("ffn_mult", 4)):
            if getattr(case, key) != default:
                return key, (f"{key} describes encoder blocks: a {case.level} case keeps its "
                             f"default ({default}), not {getattr(case, key)!r}")
    return None


def _kernel_only(case: Case):
    if case.level == "kernel":
        return None
    if case.seq_len_kv != case.seq_len:
        return "seq_len_kv", (f"the {case.level} level is self-attention: seq_len_kv must equal "
                              f"seq_len ({case.seq_len}), not {case.seq_len_kv}")
    if case.kv_heads != case.heads:
        return "kv_heads", (f"grouped K/V heads are a kernel-level problem: a {case.level} case "
                            f"keeps kv_heads equal to heads ({case.heads}), not {case.kv_heads}")
    changed = [k for k in (*MODIFIERS, "lengths", "layout") if not case.at_default(k)]
    if changed:
        return changed[0], (f"{changed[0]} is a kernel-level problem: a {case.level} case keeps "
                            f"its default ({DEFAULTS[changed[0]]!r})")
    return None


def _alignment(case: Case):
    if case.causal_align == BOTTOM_RIGHT and case.seq_len > case.seq_len_kv:
        return "causal_align", (f"bottom-right causal with more queries ({case.seq_len}) than keys "
                                f"({case.seq_len_kv}) leaves the first "
                                f"{case.seq_len - case.seq_len_kv} queries no key to attend to")
    return None


def _window(case: Case):
    if case.window and not case.causal:
        return "window", ("a sliding window keeps each query's most recent keys: it needs "
                          "causal = true")
    if case.window and case.window >= case.seq_len_kv:
        return "window", (f"window {case.window} covers all {case.seq_len_kv} keys: the same "
                          "problem as plain causal; expected a window narrower than seq_len_kv")
    return None


def _ragged(case: Case):
    if case.lengths != CONSTANT and case.padding:
        return "lengths", ("padding and a length distribution both make the batch ragged: "
                           "give one of them")
    return None


def _groups(case: Case):
    if case.kv_heads > case.heads or case.heads % case.kv_heads:
        return "kv_heads", (f"heads ({case.heads}) must be a multiple of kv_heads "
                            f"({case.kv_heads}): each K/V head serves a whole group of query heads")
    return None


CASE_RULES = (_layer_axes, _groups, _kernel_only, _alignment, _window, _ragged)


ALIGN_MEANINGS = (f"{TOP_LEFT}: query i sees keys 0..i, as SDPA's is_causal; {BOTTOM_RIGHT}: "
                  "query i is token Nk - Nq + i and sees keys 0..Nk - Nq + i, as in decode")


def _check_alignment(where: str, tables: list[dict], suite: Suite) -> None:
    """A causal case whose query and key lengths differ means two different problems under the
    two alignments: the suite must say which, in each table ([sweep] with a variant) that has
    such a case."""
    unsaid = [sweep for table, sweep in zip(tables, suite.sweeps()) if "causal_align" not in table]
    for case in (c for sweep in unsaid for c in Suite(name="", path=None, sweep=sweep).cases()):
        if case.causal and case.seq_len != case.seq_len_kv:
            raise SuiteError(
                f"{where}: missing key 'sweep.causal_align': a causal case with seq_len "
                f"{case.seq_len} != seq_len_kv {case.seq_len_kv} is ambiguous; expected "
                f"causal_align = \"{TOP_LEFT}\" or \"{BOTTOM_RIGHT}\" ({ALIGN_MEANINGS})")


def resolve_suite_path(name_or_path: str | None) -> Path:
    """A path as given, or a bare name looked up in suites/ ("smoke" -> suites/smoke.toml)."""
    if name_or_path is None:
        return SUITES_DIR / "default.toml"
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists() or "/" in name_or_path:
        return path
    return SUITES_DIR / f"{name_or_path}.toml"


def load_suite(name_or_path: str | None, known_impls: set[str] | dict[str, str]) -> Suite:
    """Parse and validate a suite file; raise SuiteError with one clear line on any problem.

    `known_impls` names the registered implementations; as a {name: level} mapping it also
    lets `impls = "all"` mean every implementation of the suite's levels.
    """
    if name_or_path is not None and (not name_or_path.strip() or "\0" in name_or_path):
        raise SuiteError(f"suite: expected a suite file or a built-in name, got {name_or_path!r}")
    try:
        path = resolve_suite_path(name_or_path)
        found = path.is_file()
    except OSError as exc:
        raise SuiteError(f"{name_or_path}: cannot be read ({exc.strerror})") from None
    where = str(path)
    if not found:
        available = ", ".join(builtin_suite_names())
        raise SuiteError(f"{where}: no such suite file (built-in suites: {available})")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise SuiteError(f"{where}: not a text file (byte {exc.start} is not UTF-8): expected "
                         "a TOML suite") from None
    except OSError as exc:
        raise SuiteError(f"{where}: cannot be read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError(f"{where}: not valid TOML: {exc}") from None
    for key in data:
        if key not in TOP_KEYS:
            raise SuiteError(f"{where}: unknown key '{key}': expected one of {', '.join(sorted(TOP_KEYS))}")
    for key, kind in (("name", values.NAME_KIND), ("description", values.TEXT)):
        if key in data:
            _checked(kind, data[key], f"{where}: key '{key}'")
    sweep_table = data.get("sweep")
    if not isinstance(sweep_table, dict):
        raise SuiteError(f"{where}: missing table [sweep]: expected at least 'impls' and 'seq_len'")
    sweep = _validate_sweep(where, sweep_table, known_impls)
    variants = _validate_variants(where, data.get("variants", [{}]), known_impls)
    timing = _validate_timing(where, data.get("timing", {}))
    # the run directory is named after the suite, so a name from the file keeps to safe characters
    name = data.get("name") or re.sub(r"[^A-Za-z0-9._+-]", "-", path.stem).lstrip(".-") or "suite"
    suite = Suite(name=name, path=path, sweep=sweep, timing=timing,
                  description=data.get("description", ""), variants=variants)
    _check_combinations(where, suite)
    _check_alignment(where, [{**sweep_table, **v} for v in data.get("variants", [{}])], suite)
    for case in suite.cases():
        problem = values.shape_problem(case.batch, case.heads, case.seq_len, case.seq_len_kv,
                                       case.head_dim)
        if problem:
            raise SuiteError(f"{where}: key 'sweep': a shape no tensor can have: {problem}")
    return suite


def _check_combinations(where: str, suite: Suite) -> None:
    """Every value a sweep lists must reach at least one valid case: a suite asking only for
    combinations that cannot exist fails here, naming the key, rather than running nothing."""
    for i, sweep in enumerate(suite.sweeps()):
        _check_sweep_combinations(f"{where}: [[variants]] {i + 1}" if suite.variants[i] else where,
                                  sweep)


def _check_sweep_combinations(where: str, sweep: dict[str, list]) -> None:
    whole = Suite(name="", path=None, sweep=sweep)
    for key, listed in sweep.items():
        for value in listed:
            if dataclasses.replace(whole, sweep={**sweep, key: [value]}).cases():
                continue
            params = {k: v[0] for k, v in sweep.items() if k != "impls"}
            params.update({"impl": sweep["impls"][0]})
            params["impl" if key == "impls" else key] = value
            problem = case_problem(Case(**params))
            why = problem[1] if problem else "no valid combination uses it"
            raise SuiteError(f"{where}: key 'sweep.{problem[0] if problem else key}': {why}")


def _checked(kind: values.Kind, value, where: str):
    """kind.check, raising SuiteError (the suite's own kind of BadValue)."""
    try:
        return kind.check(value, where)
    except values.BadValue as exc:
        raise SuiteError(str(exc)) from None


def _validate_sweep(where: str, table: dict, known_impls, partial: bool = False) -> dict[str, list]:
    """The sweep's lists, each value checked by its key's kind; `partial`: a variant's keys only
    (no required keys, no defaults)."""
    sweep = {}
    for key, raw in table.items():
        if key not in SWEEP_KEYS:
            raise SuiteError(f"{where}: unknown key 'sweep.{key}': expected one of "
                             f"{', '.join(SWEEP_KEYS)}")
        kind = SWEEP_KEYS[key]
        items = raw if isinstance(raw, list) else [raw]
        if key == "impls" and raw == "all":
            items = sorted(known_impls)
        if not items:
            raise SuiteError(f"{where}: key 'sweep.{key}': expected {kind.expected} (or a "
                             f"non-empty list of them), got an empty list")
        for v in items:
            if not kind.valid(v):
                raise SuiteError(f"{where}: key 'sweep.{key}': expected {kind.expected} (or a "
                                 f"list of them), got {v!r}")
        if key == "impls":
            unknown = [v for v in items if v not in known_impls]
            if unknown:
                raise SuiteError(f"{where}: key 'sweep.impls': unknown implementation "
                                 f"{unknown[0]!r}: expected one of {', '.join(sorted(known_impls))}")
        if key == "fn":
            _check_functions(where, items, known_impls, partial)
        sweep[key] = list(dict.fromkeys(items))  # dedupe, keep order
    if partial:
        if "impls" in sweep:
            sweep["impls"] = _with_functions(sweep["impls"], known_impls)
        return sweep
    if sweep.pop("fn", None):
        sweep.setdefault("impls", [])
    for required in ("impls", "seq_len"):
        if required not in sweep:
            raise SuiteError(f"{where}: missing key 'sweep.{required}': expected "
                             f"{SWEEP_KEYS[required].expected}")
    for key, default in SWEEP_DEFAULTS.items():
        sweep.setdefault(key, list(default))
    if table.get("impls") == "all" and isinstance(known_impls, dict):
        sweep["impls"] = [i for i in sweep["impls"] if known_impls[i] in sweep["level"]]
        if not sweep["impls"]:
            raise SuiteError(f"{where}: key 'sweep.impls': no implementation of level "
                             f"{', '.join(sweep['level'])} is registered")
    sweep["impls"] = _with_functions(sweep["impls"], known_impls)
    return sweep


def _check_functions(where: str, paths: list[str], known_impls, partial: bool) -> None:
    """`sweep.fn`: in [sweep] only, each function loaded (the command that reads the suite
    loads them first: harness.registry.use_functions)."""
    if partial:
        raise SuiteError(f"{where}: key 'sweep.fn': a function runs on the whole suite: give it "
                         "in [sweep], not in a variant")
    for path in paths:
        if function_impl(path) not in known_impls:
            raise SuiteError(f"{where}: key 'sweep.fn': function {path!r} is not loaded: "
                             "`attnbench run` loads a suite's functions; elsewhere name it in "
                             "$ATTNBENCH_PLUGINS")


def _with_functions(impls: list[str], known_impls) -> list[str]:
    """`impls` and every function loaded as an implementation (a suite's `sweep.fn`, `--fn`,
    $ATTNBENCH_PLUGINS): a function named for a run runs on every case of the suite (at a
    level other than kernel, `unsupported` with the reason)."""
    functions = sorted(name for name in known_impls if name.startswith(FUNCTION_PREFIX))
    return list(dict.fromkeys([*impls, *functions]))


def suite_functions(name_or_path: str | None) -> list[str]:
    """The function paths a suite's `sweep.fn` lists, read ahead of the suite: they are loaded
    as implementations before load_suite checks its `impls`. A file that cannot be read lists
    none here (load_suite says what is wrong with it)."""
    try:
        path = resolve_suite_path(name_or_path)
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # unreadable, not UTF-8, not TOML
        return []
    sweep = data.get("sweep")
    raw = sweep.get("fn", []) if isinstance(sweep, dict) else []
    return [_checked(FUNCTION_PATH, v, f"{path}: key 'sweep.fn'")
            for v in (raw if isinstance(raw, list) else [raw])]


def _validate_variants(where: str, tables, known_impls) -> tuple[dict[str, list], ...]:
    """[[variants]]: a list of tables of sweep keys, each checked as [sweep]'s keys are."""
    if not isinstance(tables, list) or not tables \
            or not all(isinstance(t, dict) for t in tables):
        raise SuiteError(f"{where}: key 'variants': expected [[variants]] tables of sweep keys "
                         f"(one per variant), got {tables!r}")
    return tuple(_validate_sweep(f"{where}: [[variants]] {i + 1}", table, known_impls,
                                 partial=True) for i, table in enumerate(tables))


def _validate_timing(where: str, table) -> TimingSettings:
    if not isinstance(table, dict):
        raise SuiteError(f"{where}: key 'timing': expected a table, got {table!r}")
    kwargs = {}
    for key, raw in table.items():
        if key not in TIMING_KEYS:
            raise SuiteError(f"{where}: unknown key 'timing.{key}': expected one of "
                             f"{', '.join(TIMING_KEYS)}")
        kwargs[key] = _checked(TIMING_KEYS[key], raw, f"{where}: key 'timing.{key}'")
    settings = timing_settings(kwargs)
    if settings.min_samples > settings.max_samples:
        raise SuiteError(f"{where}: key 'timing.min_samples': expected at most timing.max_samples "
                         f"({settings.max_samples}), got {settings.min_samples}")
    return settings


def timing_settings(given: dict, base: TimingSettings | None = None) -> TimingSettings:
    """TimingSettings from checked values, each as the field's type (a TOML 2 is 2.0 s)."""
    base = base or TimingSettings()
    return dataclasses.replace(base, **{k: type(getattr(base, k))(v) for k, v in given.items()})
