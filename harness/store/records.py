"""A record: one JSON object per case, with every RECORD_FIELDS key (None where a case did not
get that far), so DataFrames from different runs have the same columns."""
from __future__ import annotations

from datetime import datetime, timezone

SCHEMA_VERSION = 1

RECORD_FIELDS = (
    "schema_version", "case_id", "impl", "level", "mode", "device", "dtype", "batch", "heads",
    "seq_len", "seq_len_kv", "head_dim", "causal", "seed", "padding", "norm", "ffn_mult",
    "status", "reason", "kernel",
    "median_s", "ci_low_s", "ci_high_s", "ci_rel", "converged", "iqr_s", "min_s", "mean_s",
    "std_s", "n_samples", "calls_per_sample", "warmup_calls", "timed_s", "samples_s", "timer",
    "compile_s", "impl_info",
    "repeat_medians_s", "repeat_n_samples", "stable", "instability", "contention", "remeasured",
    "max_abs_err", "rel_err", "tolerance", "out_dtype", "grad_errors", "grad_err_ratio",
    "flops", "tflops", "pct_of_peak", "peak_mem_bytes", "mem_method", "oom_bytes", "predicted",
    "threads", "worker", "host", "executor_worker", "started_at", "wall_s", "harness_s",
)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def make_record(case, result: dict, **extra) -> dict:
    """A complete record: every RECORD_FIELDS key, the case's fields, then what was measured."""
    record = dict.fromkeys(RECORD_FIELDS)
    record.update(schema_version=SCHEMA_VERSION, case_id=case.case_id, **case.to_dict())
    record.update(result)
    record.update(extra)
    return record


def complete(record: dict) -> dict:
    """A loaded record with every RECORD_FIELDS key (older runs lack the newer fields)."""
    return {**dict.fromkeys(RECORD_FIELDS), **record}
