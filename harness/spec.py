"""Case (one measurement) and Suite (a TOML sweep that expands into Cases).

A bad suite fails here, before anything runs, with one line naming the file, the key and what
was expected (SuiteError). Everything downstream can trust a Case.
"""
from __future__ import annotations

import dataclasses
import itertools
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from harness import values
from harness.constants import DTYPES, LEVELS, MODES, NORMS

SUITES_DIR = Path(__file__).resolve().parent.parent / "suites"


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


@dataclass(frozen=True, order=True)
class Case:
    """One implementation on one problem. Hashable; `case_id` is stable across runs."""

    impl: str
    level: str = "kernel"
    mode: str = "fwd"
    device: str = "cpu"
    dtype: str = "float32"
    batch: int = 1
    heads: int = 8
    seq_len: int = 128
    seq_len_kv: int = 0  # 0 means "same as seq_len"; normalised in __post_init__
    head_dim: int = 64
    causal: bool = False
    seed: int = 0
    # Fields added after the first release. Each default leaves case_id and problem_key as they
    # were, so old records and baselines keep matching; a non-default value adds a suffix.
    padding: float = 0.0  # fraction of each sequence's keys that are padding (key-padding mask)
    norm: str = "post"  # encoder blocks: "post" (LayerNorm after the residual) or "pre"
    ffn_mult: int = 4  # encoder blocks: feed-forward width = ffn_mult * d_model

    def __post_init__(self):
        if self.seq_len_kv == 0:
            object.__setattr__(self, "seq_len_kv", self.seq_len)
        object.__setattr__(self, "padding", float(self.padding))

    @property
    def d_model(self) -> int:
        """Model width of the mha and encoder levels: heads x head_dim."""
        return self.heads * self.head_dim

    def _extras(self) -> list[str]:
        """The non-default later fields, as case_id segments (empty for the defaults)."""
        extras = []
        if self.padding:
            extras.append(f"pad{self.padding:g}")
        if self.norm != "post":
            extras.append(f"{self.norm}norm")
        if self.ffn_mult != 4:
            extras.append(f"ffn{self.ffn_mult}")
        return extras

    @property
    def case_id(self) -> str:
        mask = "causal" if self.causal else "full"
        shape = f"b{self.batch}-h{self.heads}-n{self.seq_len}x{self.seq_len_kv}-d{self.head_dim}"
        return "/".join([self.impl, self.level, self.mode, self.device, self.dtype, shape, mask,
                         f"s{self.seed}", *self._extras()])

    @property
    def problem_key(self) -> tuple:
        """What decides the inputs and the reference output: everything but impl, dtype and mode."""
        return (self.level, self.batch, self.heads, self.seq_len, self.seq_len_kv,
                self.head_dim, self.causal, self.seed, *self._extras())

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Case":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


# Sweep keys: name -> the kind of value each element must be (harness.values)
SWEEP_KEYS = {
    "impls": values.Kind("a list of implementation names (see `attnbench list`)",
                         lambda v: isinstance(v, str)),
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
}
# Timing keys: the kind of each TimingSettings field (the CLI's --budget and friends use these)
TIMING_KEYS = {"warmup_s": values.SECONDS, "min_samples": values.COUNT,
               "max_samples": values.COUNT, "target_ci": values.FRACTION,
               "budget_s": values.SECONDS, "min_sample_s": values.SECONDS,
               "timeout_s": values.SECONDS, "repeats": values.COUNT,
               "cuda_graphs": values.BOOL}
SWEEP_DEFAULTS = {"level": ["kernel"], "mode": ["fwd"], "device": ["cpu"], "dtype": ["float32"],
                  "batch": [1], "heads": [8], "head_dim": [64], "causal": [False], "seed": [0],
                  "padding": [0.0], "norm": ["post"], "ffn_mult": [4]}
TOP_KEYS = {"name", "description", "sweep", "timing"}


@dataclass
class Suite:
    """A named sweep plus how to time it. `cases()` is the cartesian product, in a stable order."""

    name: str
    path: Path | None
    sweep: dict[str, list]
    timing: TimingSettings = field(default_factory=TimingSettings)
    description: str = ""

    def cases(self) -> list[Case]:
        axes = ["impls", "level", "mode", "device", "dtype", "batch", "heads", "seq_len",
                "seq_len_kv", "head_dim", "causal", "seed", "padding", "norm", "ffn_mult"]
        values = [self.sweep.get(a, [0] if a == "seq_len_kv" else None) for a in axes]
        out = []
        for combo in itertools.product(*values):
            params = dict(zip(axes, combo))
            params["impl"] = params.pop("impls")
            out.append(Case(**params))
        return out


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
        available = ", ".join(sorted(p.stem for p in SUITES_DIR.glob("*.toml")))
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
    timing = _validate_timing(where, data.get("timing", {}))
    # the run directory is named after the suite, so a name from the file keeps to safe characters
    name = data.get("name") or re.sub(r"[^A-Za-z0-9._+-]", "-", path.stem).lstrip(".-") or "suite"
    suite = Suite(name=name, path=path, sweep=sweep, timing=timing,
                  description=data.get("description", ""))
    for case in suite.cases():
        problem = values.shape_problem(case.batch, case.heads, case.seq_len, case.seq_len_kv,
                                       case.head_dim)
        if problem:
            raise SuiteError(f"{where}: key 'sweep': a shape no tensor can have: {problem}")
    return suite


def _checked(kind: values.Kind, value, where: str):
    """kind.check, raising SuiteError (the suite's own kind of BadValue)."""
    try:
        return kind.check(value, where)
    except values.BadValue as exc:
        raise SuiteError(str(exc)) from None


def _validate_sweep(where: str, table: dict, known_impls) -> dict[str, list]:
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
        sweep[key] = list(dict.fromkeys(items))  # dedupe, keep order
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
    return sweep


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
