"""Shapes and configurations as the report's tables label them.

A shape is everything that fixes the problem an implementation is asked to solve (one row of
the latency matrix); a configuration is a shape without its sequence lengths (one line of a
seq_len sweep, one panel of a plot).
"""
from __future__ import annotations

from harness.analysis.scaling import sort_key
from harness.constants import CONFIG_FIELDS, OPTIONAL_AXES
from harness.report.format import finite, mask_name


def shape_key(r: dict) -> tuple:
    return (*(r[k] for k in CONFIG_FIELDS), r["seq_len"], r["seq_len_kv"], r["seed"])


def shape_order(key: tuple) -> tuple:
    """Sort key of a shape_key: dtype and mask before the sizes, numbers numeric."""
    level, mode, device, dtype, batch, heads, head_dim, causal, n, nkv, seed = key
    return tuple(sort_key(v) for v in (level, mode, device, dtype, causal, batch, heads, head_dim,
                                      n, nkv, seed))


def varying(records: list[dict]) -> list[str]:
    """The optional axes (level, mode, device, sizes) that take more than one value here."""
    return [k for k in OPTIONAL_AXES if len({r[k] for r in records}) > 1]


def shape_columns(records: list[dict]) -> list[str]:
    """Label columns of a shape: dtype, mask, the axes that vary in the run, then N."""
    cols = ["dtype", "mask", *varying(records), "N"]
    if any(r["seq_len_kv"] not in (None, r["seq_len"]) for r in records):
        cols.append("N kv")
    if len({r["seed"] for r in records}) > 1:
        cols.append("seed")
    return cols


def shape_labels(key: tuple, columns: list[str]) -> list[str]:
    values = dict(zip((*CONFIG_FIELDS, "N", "N kv", "seed"), key))
    values["mask"] = mask_name(values["causal"])
    return [str(values[c]) for c in columns]


def config_label(r: dict, axes: list[str]) -> str:
    """"float32 causal" plus the axes that vary in the run (e.g. "mode=fwd_bwd")."""
    parts = [str(r["dtype"]), mask_name(r["causal"])]
    parts += [f"{k}={r[k]}" for k in axes]
    return " ".join(parts)


def impls_of(records: list[dict]) -> list[str]:
    return sorted({r["impl"] for r in records})


def fastest_by_shape(records: list[dict]) -> dict[tuple, dict]:
    """{shape: {"impl": fastest, "median_s": its median, "n": how many impls ran it}}."""
    best: dict[tuple, dict] = {}
    for r in records:
        med = finite(r["median_s"]) if r["status"] == "ok" else None
        if med is None or med <= 0:
            continue
        key = shape_key(r)
        entry = best.setdefault(key, {"impl": r["impl"], "median_s": med, "impls": set()})
        entry["impls"].add(r["impl"])
        if med < entry["median_s"]:
            entry.update(impl=r["impl"], median_s=med)
    return {k: {"impl": v["impl"], "median_s": v["median_s"], "n": len(v["impls"])}
            for k, v in best.items()}
