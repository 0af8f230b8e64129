"""The record schema: every field a record may carry, declared once, in typed parts.

A record used to be a hand-kept tuple of names beside the code that filled it (the timer's
statistics, the combination of repeats, the loader), so a new field touched several files and
nothing failed when one was missed. Here each part is a frozen dataclass with one typed,
commented field per figure, and the names are derived from the parts (`dataclasses.fields`, as
tritonbench derives its metric list from `BenchmarkOperatorMetrics`):

- `RECORD_FIELDS`, the record's keys and a DataFrame's column order, is the parts in `PARTS`
  order, each in its declared order;
- the case's fields are `Case`'s own (harness.case, through harness.spec), so a new Case field
  is a record field with nothing else to edit;
- `FIELD_TYPES`, the JSON type each field's value must have when it is not null, is read from
  the annotations (`float | None` -> float, `list[float] | None` -> list), and so are
  `NUMBER_FIELDS` (float columns in pandas) and `NUMBER_LISTS`: the loader checks and casts
  by them (harness.store.rundir), so a field's type is written once, here;
- `make_record` (harness.store.records) refuses a key no part declares; the timer's `Samples`
  fills the `Timing` part, one property per field under the field's name (harness.store
  imports harness.measure, so the timer cannot import this module: tests/test_schema.py holds
  `Samples.TIMING` to the part); and the list of record fields in docs/records.md is checked
  against `RECORD_FIELDS`.

Every field defaults to None: a case that did not get that far (unsupported, out of memory)
has nulls there, and a record from before a field existed loads with a null in its column.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass

from harness.spec import Case

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Identity:
    """Which record this is."""

    schema_version: int | None = None  # the record format's version (SCHEMA_VERSION)
    case_id: str | None = None  # the case's stable id; resume and compare key on it


@dataclass(frozen=True)
class Outcome:
    """What became of the case."""

    status: str | None = None  # ok, unsupported, mismatch, oom, timeout or error
    reason: str | None = None  # why it is not ok, in words a user can act on ("" when ok)
    kernel: str | None = None  # the kernel that really ran (torch SDPA's backend), when known


@dataclass(frozen=True)
class Timing:
    """One call's duration: the statistics of the samples (harness.measure.timer.Samples fills
    every field here) and how they were taken."""

    median_s: float | None = None  # median seconds per call; over repeats, their geometric mean
    ci_low_s: float | None = None  # the median's 95% confidence interval, lower end
    ci_high_s: float | None = None  # ... and upper end
    ci_rel: float | None = None  # the interval's half-width over the median
    converged: bool | None = None  # ci_rel reached the suite's target_ci
    iqr_s: float | None = None  # interquartile range of the per-call samples
    min_s: float | None = None  # fastest per-call sample
    mean_s: float | None = None  # mean per-call sample
    std_s: float | None = None  # standard deviation of the per-call samples
    n_samples: int | None = None  # samples taken (over all repeats)
    calls_per_sample: int | None = None  # calls timed together in one sample (short calls)
    warmup_calls: int | None = None  # calls made and discarded before the samples
    timed_s: float | None = None  # wall seconds spent in warm-up and sampling
    samples_s: list[float] | None = None  # every per-call sample, repeats one after another
    timer: str | None = None  # the clock that took the samples: host, cuda_event or cuda_graph


@dataclass(frozen=True)
class FirstCall:
    """The call before the samples, which is never one of them."""

    compile_s: float | None = None  # seconds of the first call of compiled or jitted code
    impl_info: dict | None = None  # what the implementation says about the call it prepared


@dataclass(frozen=True)
class Stability:
    """Whether the figure can be trusted: repeats in separate processes, contention signals."""

    repeat_medians_s: list[float] | None = None  # each repeat's median, one per worker process
    repeat_n_samples: list[int] | None = None  # how many of samples_s each repeat contributed
    stable: bool | None = None  # false: contended or implausible; null: nobody watched
    instability: str | None = None  # why the figure is not stable
    contention: dict | None = None  # harness.measure.contention's signals, worst over repeats
    remeasured: int | None = None  # how many times the case was measured again as a suspect


@dataclass(frozen=True)
class Numerics:
    """The output (and gradients) against the float64 reference."""

    max_abs_err: float | None = None  # largest absolute error of the output
    output_finite: bool | None = None  # false: the output held NaN or Inf (max_abs_err null)
    rel_err: float | None = None  # Frobenius norm of the error over the reference's
    tolerance: float | None = None  # the bound max_abs_err was held to
    out_dtype: str | None = None  # the dtype the implementation returned
    grad_errors: dict | None = None  # fwd_bwd: each gradient's errors and tolerance
    grad_err_ratio: float | None = None  # fwd_bwd: worst gradient error over its tolerance


@dataclass(frozen=True)
class Work:
    """How much work one call does, and how fast."""

    flops: float | None = None  # floating-point operations of one call (harness.measure.flops)
    tflops: float | None = None  # flops / median_s, in TFLOP/s
    pct_of_peak: float | None = None  # tflops over the machine's measured matmul peak, in %
    bytes_moved: float | None = None  # bytes one call must move at least (harness.measure.traffic)
    gbps: float | None = None  # bytes_moved / median_s, in GB/s
    pct_of_bandwidth: float | None = None  # gbps over the machine's measured copy bandwidth, in %


@dataclass(frozen=True)
class Memory:
    """Memory: peak of one call, or how much an out-of-memory case asked for."""

    peak_mem_bytes: int | None = None  # peak extra bytes of one call, in a pass of its own
    mem_method: str | None = None  # the probe that measured it
    oom_bytes: int | None = None  # bytes the failed allocation asked for (oom)
    predicted: bool | None = None  # oom predicted from a smaller seq_len, not run


@dataclass(frozen=True)
class Placement:
    """Where and when the case ran, and where the harness's own time went."""

    threads: int | None = None  # CPU threads every framework was given
    worker: str | None = None  # the framework family's worker process that ran it
    host: str | None = None  # the machine's name
    executor_worker: str | None = None  # the Dask worker's name; null in a local run
    started_at: str | None = None  # when its measurement started (ISO 8601, to the microsecond)
    wall_s: float | None = None  # the case's whole wall time
    harness_s: dict | None = None  # seconds of each untimed step (truth, prepare, check, ...)


# The record's parts, in column order.
PARTS = (Identity, Case, Outcome, Timing, FirstCall, Stability, Numerics, Work, Memory, Placement)


def names(part) -> tuple[str, ...]:
    """The field names of one part, in declared order."""
    return tuple(f.name for f in dataclasses.fields(part))


CASE_FIELDS = names(Case)
TIMING_FIELDS = names(Timing)
RECORD_FIELDS = tuple(name for part in PARTS for name in names(part))
DECLARED = frozenset(RECORD_FIELDS)


def undeclared(keys) -> list[str]:
    """The keys no part declares, in the order given."""
    return [key for key in keys if key not in DECLARED]


def json_types(parts) -> dict[str, tuple[type, tuple]]:
    """Each field of `parts` -> the JSON type its annotation asks for and that type's item
    types: `float | None` -> (float, ()), `list[float] | None` -> (list, (float,))."""
    found = {}
    for part in parts:
        for name, annotation in typing.get_type_hints(part).items():
            if isinstance(annotation, types.UnionType) or \
                    typing.get_origin(annotation) is typing.Union:
                annotation, = (a for a in typing.get_args(annotation) if a is not type(None))
            found[name] = (typing.get_origin(annotation) or annotation,
                           typing.get_args(annotation))
    return found


ANNOTATED = json_types(PARTS)
# the type a field's value must have when it is not null (a float takes any JSON number)
FIELD_TYPES = {name: kind for name, (kind, _) in ANNOTATED.items()}
# the fields that hold a real number: float columns in pandas
NUMBER_FIELDS = tuple(name for name, kind in FIELD_TYPES.items() if kind is float)
# lists of numbers, where a null can only be a non-finite number written as strict JSON
NUMBER_LISTS = tuple(name for name, (kind, items) in ANNOTATED.items()
                     if kind is list and items == (float,))
