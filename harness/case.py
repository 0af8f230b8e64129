"""A Case (one implementation on one problem) and what makes two cases the same problem.

"Which problem is this" has one answer, read off Case's fields. Each field declares its role:
- `impl`: who solves the problem;
- `length`: seq_len and seq_len_kv, what a configuration is swept along;
- `replicate`: seed, another draw of the same problem (table rows apart, scaling series
  reduced over it);
- `config` (every other field, and any field added later unless it declares otherwise): what
  fixes the problem apart from its lengths.

A configuration is everything held fixed along a sequence-length sweep: the config fields, plus
the query length when it differs from the key length (`query_len`: decode and chunked prefill
hold the new tokens fixed and sweep the KV cache; a square problem sweeps both together, and
its `query_len` is None). Its series runs along `sweep_len`, the key length. A shape is a
configuration with its replicate fields and its sweep length: one row of the latency matrix.
Tables, plots, scaling series, crossovers, compare, recommend and headlines all key on these.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

IMPL, LENGTH, REPLICATE, CONFIG = "impl", "length", "replicate", "config"
TOP_LEFT, BOTTOM_RIGHT = "top_left", "bottom_right"
CAUSAL_ALIGNS = (TOP_LEFT, BOTTOM_RIGHT)
CONSTANT, PADDED, PACKED, NO_BIAS = "constant", "padded", "packed", "none"
LENGTHS = (CONSTANT, "uniform", "longtail", "bimodal")
LAYOUTS = (PADDED, PACKED)
BIASES = (NO_BIAS, "head", "batch_head")


def _axis(default, role: str = CONFIG, segment=None, inputs: bool = True, size: bool = False):
    """A Case field with its identity role. `segment` formats a non-default value as a case_id
    suffix (fields added after the first release: their defaults leave old ids unchanged);
    `inputs` says whether the value changes the inputs or the reference (problem_key); `size`
    marks a tensor dimension, which a nearest problem may differ in (the rest must match)."""
    return field(default=default, metadata={"role": role, "segment": segment, "inputs": inputs,
                                            "size": size})


@dataclass(frozen=True, order=True)
class Case:
    """One implementation on one problem. Hashable; `case_id` is stable across runs."""

    impl: str = _axis(dataclasses.MISSING, IMPL, inputs=False)
    level: str = _axis("kernel")
    mode: str = _axis("fwd", inputs=False)
    device: str = _axis("cpu", inputs=False)
    dtype: str = _axis("float32", inputs=False)
    batch: int = _axis(1, size=True)
    heads: int = _axis(8, size=True)
    seq_len: int = _axis(128, LENGTH, size=True)
    seq_len_kv: int = _axis(0, LENGTH, size=True)  # 0: "as seq_len", normalised in __post_init__
    head_dim: int = _axis(64, size=True)
    causal: bool = _axis(False)
    seed: int = _axis(0, REPLICATE)
    # fraction of each sequence's keys that are padding (key-padding mask)
    padding: float = _axis(0.0, segment=lambda v: f"pad{v:g}")
    # encoder blocks: "post" (LayerNorm after the residual) or "pre"
    norm: str = _axis("post", segment=lambda v: f"{v}norm")
    # encoder blocks: feed-forward width = ffn_mult * d_model
    ffn_mult: int = _axis(4, segment=lambda v: f"ffn{v}")
    # key/value heads (grouped-query attention: query head h reads K/V head h // (heads /
    # kv_heads)); 0 means "as many as heads", normalised in __post_init__
    kv_heads: int = _axis(0, segment=lambda v: f"kvh{v}", size=True)
    # where a causal mask sits when seq_len != seq_len_kv: "top_left" (query i sees keys 0..i,
    # SDPA's is_causal) or "bottom_right" (query i is token Nk - Nq + i: decode, chunked prefill)
    causal_align: str = _axis(TOP_LEFT, segment=lambda v: "br" if v == BOTTOM_RIGHT else v)
    # how long each sequence of the batch really is (harness.problem.inputs.sequence_lengths):
    # "constant" (every one seq_len long) or drawn, seeded, from "uniform", "longtail" or
    # "bimodal" with half the padded tokens real; documents of a prefill, KV caches of a decode
    lengths: str = _axis(CONSTANT, segment=lambda v: f"len-{v}")
    # how a ragged batch reaches the implementation: "padded" to seq_len, or "packed" end to end
    # (the same inputs and reference either way: a presentation, not another problem)
    layout: str = _axis(PADDED, segment=lambda v: v, inputs=False)
    # sliding window (causal): each query sees its `window` most recent keys, itself included
    window: int = _axis(0, segment=lambda v: f"win{v}")
    # ALiBi: a per-head linear bias on the distance between query and key (the paper's slopes)
    alibi: bool = _axis(False, segment=lambda v: "alibi")
    # an additive score bias: "none", one (Nq, Nk) per "head", or per "batch_head"
    bias: str = _axis(NO_BIAS, segment=lambda v: f"bias-{v}")
    # logit soft-capping: scores become softcap * tanh(scores / softcap); 0 is none
    softcap: float = _axis(0.0, segment=lambda v: f"cap{v:g}")

    def __post_init__(self):
        if self.seq_len_kv == 0:
            object.__setattr__(self, "seq_len_kv", self.seq_len)
        if self.kv_heads == 0:
            object.__setattr__(self, "kv_heads", self.heads)
        if not self.causal or self.seq_len == self.seq_len_kv:
            # one problem, one name: without a causal mask, or square, the alignments agree
            object.__setattr__(self, "causal_align", TOP_LEFT)
        object.__setattr__(self, "padding", float(self.padding))
        object.__setattr__(self, "softcap", float(self.softcap))

    @property
    def group_size(self) -> int:
        """Query heads per K/V head (1 without grouping)."""
        return self.heads // self.kv_heads if self.kv_heads else 1

    @property
    def d_model(self) -> int:
        """Model width of the mha and encoder levels: heads x head_dim."""
        return self.heads * self.head_dim

    def id_segments(self, inputs_only: bool = False) -> list[str]:
        """The later fields at non-default values, as case_id segments (none at the defaults:
        kv_heads equal to heads is its default); `inputs_only`: of the fields that change the
        inputs or the reference."""
        return [f.metadata["segment"](getattr(self, f.name)) for f in SEGMENT_FIELDS
                if not self.at_default(f.name) and (f.metadata["inputs"] or not inputs_only)]

    def at_default(self, name: str) -> bool:
        return is_default(self, name)

    @property
    def case_id(self) -> str:
        mask = "causal" if self.causal else "full"
        shape = f"b{self.batch}-h{self.heads}-n{self.seq_len}x{self.seq_len_kv}-d{self.head_dim}"
        return "/".join([self.impl, self.level, self.mode, self.device, self.dtype, shape, mask,
                         f"s{self.seed}", *self.id_segments()])

    @property
    def problem_key(self) -> tuple:
        """What decides the inputs and the reference output (not impl, dtype, mode, device)."""
        return (*(getattr(self, f.name) for f in FIELDS
                  if f.metadata["inputs"] and f.metadata["segment"] is None),
                *self.id_segments(inputs_only=True))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Case":
        """The Case of a dict or a record; a field it lacks or holds null (a record from before
        the field existed) takes its default."""
        return cls(**{k: v for k, v in data.items() if k in FIELD_NAMES and v is not None})


FIELDS = dataclasses.fields(Case)
FIELD_NAMES = tuple(f.name for f in FIELDS)
DEFAULTS = {f.name: f.default for f in FIELDS if f.default is not dataclasses.MISSING}
SEGMENT_FIELDS = tuple(f for f in FIELDS if f.metadata["segment"] is not None)

# The configuration: every config field, then the fixed query length (None when square).
CONFIG_FIELDS = (*(f.name for f in FIELDS if f.metadata["role"] == CONFIG), "query_len")
# The tensor dimensions, and the rest of a configuration: what kind of problem it is.
SIZE_FIELDS = tuple(f.name for f in FIELDS if f.metadata["size"])
KIND_FIELDS = tuple(k for k in CONFIG_FIELDS if k not in SIZE_FIELDS and k != "query_len")
REPLICATE_FIELDS = tuple(f.name for f in FIELDS if f.metadata["role"] == REPLICATE)
SHAPE_FIELDS = (*CONFIG_FIELDS, *REPLICATE_FIELDS, "sweep_len")
# Variants of the textbook problem: named in a label wherever they are off their default.
VARIANT_AXES = (*(f.name for f in SEGMENT_FIELDS), "query_len")
# Always named in a label (a dtype or a mask is never implied); the rest only where they vary.
ALWAYS_SHOWN = ("dtype", "causal")
# The order configurations are listed in: what the reader scans by first, then the sizes.
CONFIG_ORDER = ("level", "mode", "device", "dtype", "causal",
                *(k for k in CONFIG_FIELDS if k not in ("level", "mode", "device", "dtype",
                                                        "causal")))


def value_of(row, name: str):
    """A field of a Case, a record or a row keyed by these names (a fit row); a record from
    before the field existed has its default."""
    if isinstance(row, dict) and name in row and name not in DEFAULTS:
        return row[name]
    if name == "query_len":
        return query_len(row)
    if name == "sweep_len":
        return sweep_len(row)
    if name == "seq_len_kv":
        return _lengths(row)[1]
    value = row.get(name) if isinstance(row, dict) else getattr(row, name)
    if name == "kv_heads" and not value:  # from before grouped heads: as many as heads
        return value_of(row, "heads")
    if value is None and name in DEFAULTS:
        return DEFAULTS[name]
    return value


def is_default(row, name: str) -> bool:
    """Whether a field of a Case or a record is at its default (kv_heads: equal to heads)."""
    if name == "kv_heads":
        return value_of(row, name) == value_of(row, "heads")
    return value_of(row, name) == DEFAULTS.get(name)


def _lengths(row) -> tuple[int, int]:
    get = row.get if isinstance(row, dict) else (lambda name: getattr(row, name))
    n = get("seq_len")
    return n, get("seq_len_kv") or n


def query_len(row) -> int | None:
    """The query length a configuration holds fixed, None when queries and keys grow together."""
    n, nkv = _lengths(row)
    return None if n == nkv else n


def sweep_len(row) -> int:
    """Where a case sits along its configuration's sweep: its key length (= seq_len if square)."""
    return int(_lengths(row)[1])


def config_key(row) -> tuple:
    """The configuration of a Case or a record, in CONFIG_FIELDS order (impl not included)."""
    return tuple(value_of(row, k) for k in CONFIG_FIELDS)


def config_dict(row) -> dict:
    return dict(zip(CONFIG_FIELDS, config_key(row)))


def replicate_key(row) -> tuple:
    """Which draw of its problem a Case or a record is, in REPLICATE_FIELDS order (the seed)."""
    return tuple(value_of(row, k) for k in REPLICATE_FIELDS)


def shape_key(row) -> tuple:
    """The shape of a Case or a record, in SHAPE_FIELDS order: one problem, any implementation."""
    return tuple(value_of(row, k) for k in SHAPE_FIELDS)


def sort_key(value) -> tuple:
    """Sort key that keeps numbers numeric (batch 2 before 16) and tolerates None."""
    if value is None:
        return (2, 0, "")
    if isinstance(value, (int, float)):
        return (0, value, "")
    return (1, 0, str(value))


def config_order(config: tuple) -> tuple:
    """Sort key of a config_key."""
    values = dict(zip(CONFIG_FIELDS, config))
    return tuple(sort_key(values[k]) for k in CONFIG_ORDER)


def shape_order(shape: tuple) -> tuple:
    """Sort key of a shape_key: configuration first, then seed, then the sweep length."""
    n = len(CONFIG_FIELDS)
    return (config_order(shape[:n]), *(sort_key(v) for v in shape[n:]))


def varying_axes(rows) -> list[str]:
    """The configuration and replicate axes, other than ALWAYS_SHOWN, that take more than one
    value among `rows` (Cases or records): a label must name them or two problems look alike."""
    return [k for k in (*CONFIG_ORDER, *REPLICATE_FIELDS)
            if k not in ALWAYS_SHOWN and len({value_of(r, k) for r in rows}) > 1]


def series_key(row) -> tuple:
    """(impl, configuration): one implementation's sweep, one line of a plot, one fit."""
    return (value_of(row, "impl"), *config_key(row))


# How a label names an axis and writes its value: one way for console, Markdown and HTML.
AXIS_TITLES = {"causal": "mask", "query_len": "N q"}


def axis_title(name: str) -> str:
    return AXIS_TITLES.get(name, name)


def axis_text(name: str, value) -> str:
    if name == "causal":
        return "causal" if value else "full"
    if name == "query_len":
        return "= N" if value is None else str(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def label_axes(rows) -> list[str]:
    """The axes a table labels its rows with: dtype, mask, whatever else varies in `rows`, and
    every variant of the textbook problem (grouped K/V heads, alignment, padding, a fixed query
    length...) wherever it is off its default, varying or not."""
    rows = list(rows)
    shown = set(varying_axes(rows))
    shown |= {a for a in VARIANT_AXES if any(not is_default(r, a) for r in rows)}
    return [*ALWAYS_SHOWN, *(a for a in (*CONFIG_ORDER, *REPLICATE_FIELDS) if a in shown)]


def label_cells(row, axes: list[str]) -> list[str]:
    return [axis_text(a, value_of(row, a)) for a in axes]


def config_text(row, axes: list[str]) -> str:
    """"float32 causal" plus the other given axes as name=value ("norm=pre")."""
    parts = [axis_text(a, value_of(row, a)) for a in ALWAYS_SHOWN]
    parts += [f"{axis_title(a)}={axis_text(a, value_of(row, a))}" for a in axes
              if a not in ALWAYS_SHOWN]
    return " ".join(parts)


def named_config(row) -> str:
    """The configuration in words without the run around it: dtype, mask and every other axis
    away from its default (two configurations never read alike)."""
    return config_text(row, [a for a in CONFIG_ORDER if a not in ALWAYS_SHOWN
                             and not is_default(row, a)])
