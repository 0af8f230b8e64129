"""Shapes and configurations as the report's tables label them, from harness.case's one
definition of a problem.

A shape is everything that fixes the problem an implementation is asked to solve (one row of
the latency matrix); a configuration is a shape without its sequence length (one line of a
sweep, one panel of a plot). Labels name dtype and mask always, and every other axis that takes
more than one value in the run, so two problems never share a label.
"""
from __future__ import annotations

from harness.case import (ALWAYS_SHOWN, CONFIG_FIELDS, REPLICATE_FIELDS, SHAPE_FIELDS,
                          axis_title, config_key, config_text, label_axes, label_cells, shape_key,
                          shape_order, sweep_len)
from harness.report.format import finite

__all__ = ["config_key", "config_label", "fastest_by_shape", "impls_of", "shape_columns",
           "shape_key", "shape_labels", "shape_order", "sweep_len", "varying"]

LENGTH_COLUMN = "N"


def varying(records: list[dict]) -> list[str]:
    """The axes a label names besides dtype and mask: those that vary here, and the problem's
    variants off their defaults (harness.case.label_axes)."""
    return [a for a in label_axes(records) if a not in ALWAYS_SHOWN]


def shape_columns(records: list[dict]) -> list[str]:
    """Column titles of a shape's labels: dtype, mask, the axes that vary in the run, then N
    (the key length, which a rectangular configuration sweeps)."""
    return [*(axis_title(a) for a in label_axes(records)), LENGTH_COLUMN]


def shape_labels(key: tuple, columns: list[str]) -> list[str]:
    """The label cells of a shape_key under `shape_columns`' titles."""
    row = dict(zip(SHAPE_FIELDS, key))
    row.update(seq_len=row["query_len"] or row["sweep_len"], seq_len_kv=row["sweep_len"])
    titles = {axis_title(a): a for a in (*CONFIG_FIELDS, *REPLICATE_FIELDS)}
    return [str(row["sweep_len"]) if c == LENGTH_COLUMN else label_cells(row, [titles[c]])[0]
            for c in columns]


def config_label(r: dict, axes: list[str]) -> str:
    """"float32 causal" plus the axes that vary in the run (e.g. "norm=pre")."""
    return config_text(r, axes)


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
