"""Case (one measurement) and Suite (a TOML sweep that expands into Cases).

A bad suite fails here, before anything runs, with one line naming the file, the key and what
was expected (SuiteError). Everything downstream can trust a Case.
"""
from __future__ import annotations

import dataclasses
import itertools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

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


class SuiteError(ValueError):
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


# Sweep keys: name -> (element type, how to describe a valid value, validator)
def _positive(v):
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _non_negative(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _device(v):
    return isinstance(v, str) and (v == "cpu" or v == "cuda" or
                                   (v.startswith("cuda:") and v[5:].isdigit()))


def _fraction(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1


SWEEP_KEYS = {
    "impls": ("a list of implementation names (see `attnbench list`)", lambda v: isinstance(v, str)),
    "level": (f"one of {', '.join(LEVELS)}", lambda v: v in LEVELS),
    "mode": (f"one of {', '.join(MODES)}", lambda v: v in MODES),
    "device": ("'cpu', 'cuda' or 'cuda:N'", _device),
    "dtype": (f"one of {', '.join(DTYPES)}", lambda v: v in DTYPES),
    "batch": ("a positive integer", _positive),
    "heads": ("a positive integer", _positive),
    "seq_len": ("a positive integer", _positive),
    "seq_len_kv": ("a positive integer", _positive),
    "head_dim": ("a positive integer", _positive),
    "causal": ("true or false", lambda v: isinstance(v, bool)),
    "seed": ("a non-negative integer", _non_negative),
    "padding": ("a fraction of padded keys, at least 0 and below 1", _fraction),
    "norm": (f"one of {', '.join(NORMS)}", lambda v: v in NORMS),
    "ffn_mult": ("a positive integer", _positive),
}
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
    path = resolve_suite_path(name_or_path)
    where = str(path)
    if not path.is_file():
        available = ", ".join(sorted(p.stem for p in SUITES_DIR.glob("*.toml")))
        raise SuiteError(f"{where}: no such suite file (built-in suites: {available})")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError(f"{where}: not valid TOML: {exc}") from None
    for key in data:
        if key not in TOP_KEYS:
            raise SuiteError(f"{where}: unknown key '{key}': expected one of {', '.join(sorted(TOP_KEYS))}")
    for key in ("name", "description"):
        if key in data and not isinstance(data[key], str):
            raise SuiteError(f"{where}: key '{key}': expected a string, got {data[key]!r}")
    sweep_table = data.get("sweep")
    if not isinstance(sweep_table, dict):
        raise SuiteError(f"{where}: missing table [sweep]: expected at least 'impls' and 'seq_len'")
    sweep = _validate_sweep(where, sweep_table, known_impls)
    timing = _validate_timing(where, data.get("timing", {}))
    return Suite(name=data.get("name", path.stem), path=path, sweep=sweep, timing=timing,
                 description=data.get("description", ""))


def _validate_sweep(where: str, table: dict, known_impls) -> dict[str, list]:
    sweep = {}
    for key, raw in table.items():
        if key not in SWEEP_KEYS:
            raise SuiteError(f"{where}: unknown key 'sweep.{key}': expected one of "
                             f"{', '.join(SWEEP_KEYS)}")
        expected, valid = SWEEP_KEYS[key]
        values = raw if isinstance(raw, list) else [raw]
        if key == "impls" and raw == "all":
            values = sorted(known_impls)
        if not values:
            raise SuiteError(f"{where}: key 'sweep.{key}': expected {expected} (or a non-empty "
                             f"list of them), got an empty list")
        for v in values:
            if not valid(v):
                raise SuiteError(f"{where}: key 'sweep.{key}': expected {expected} (or a list of "
                                 f"them), got {v!r}")
        if key == "impls":
            unknown = [v for v in values if v not in known_impls]
            if unknown:
                raise SuiteError(f"{where}: key 'sweep.impls': unknown implementation "
                                 f"{unknown[0]!r}: expected one of {', '.join(sorted(known_impls))}")
        sweep[key] = list(dict.fromkeys(values))  # dedupe, keep order
    for required in ("impls", "seq_len"):
        if required not in sweep:
            raise SuiteError(f"{where}: missing key 'sweep.{required}': expected "
                             f"{SWEEP_KEYS[required][0]}")
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
    defaults = TimingSettings()
    kwargs = {}
    for key, raw in table.items():
        if not hasattr(defaults, key):
            names = ", ".join(f.name for f in dataclasses.fields(TimingSettings))
            raise SuiteError(f"{where}: unknown key 'timing.{key}': expected one of {names}")
        default = getattr(defaults, key)
        if isinstance(default, int):
            ok = _positive(raw)
            expected = "a positive integer"
        else:
            ok = isinstance(raw, (int, float)) and not isinstance(raw, bool) and raw > 0
            expected = "a positive number"
        if not ok:
            raise SuiteError(f"{where}: key 'timing.{key}': expected {expected}, got {raw!r}")
        kwargs[key] = type(default)(raw)
    settings = TimingSettings(**kwargs)
    if settings.min_samples > settings.max_samples:
        raise SuiteError(f"{where}: key 'timing.min_samples': expected at most timing.max_samples "
                         f"({settings.max_samples}), got {settings.min_samples}")
    return settings
