"""The scaling views: the fitted exponents and crossovers as the reports show them, read from
the run's scaling.json, or computed from its records when the run never got to write one."""
from __future__ import annotations

import json
from pathlib import Path

from harness.analysis import scaling
from harness.constants import CONFIG_FIELDS
from harness.report.format import mask_name


def load_scaling(path: Path, records: list[dict]) -> tuple[dict, str]:
    """(fits and crossovers, where they came from: "scaling.json", "computed" or "")."""
    file = path / scaling.SCALING
    if file.exists():
        try:
            data = json.loads(file.read_text())
            if isinstance(data.get("fits"), list):
                data.setdefault("crossovers", [])
                data.setdefault("fit_points", scaling.FIT_POINTS)
                return data, "scaling.json"
        except (OSError, ValueError, AttributeError):
            pass  # unreadable: computed from the records below, and the report says so
    if not any(r["status"] == "ok" for r in records):
        return {"fit_points": scaling.FIT_POINTS, "fits": [], "crossovers": []}, ""
    return ({"fit_points": scaling.FIT_POINTS, "fits": scaling.fits(records),
             "crossovers": scaling.crossovers(records, min_ratio=scaling.CROSSOVER_MARGIN)},
            "computed")


def scaling_table(run) -> tuple[list[str], list[list[str]]]:
    fitted = [f for f in run.scaling.get("fits", []) if f.get("exponent") is not None]
    return scaling.format_fits(fitted) if fitted else ([], [])


def scaling_gaps(run) -> list[str]:
    """Why some implementations have no exponent (fewer than 3 seq_lens with a value)."""
    notes = {}
    for f in run.scaling.get("fits", []):
        if f.get("exponent") is None and f.get("metric") == "time":
            notes.setdefault(f.get("note") or "not enough points", set()).add(f["impl"])
    return [f"{', '.join(sorted(impls))}: {note}" for note, impls in sorted(notes.items())]


def fit_lookup(run) -> dict[tuple, dict]:
    """{(impl, metric, config...): fit row} for the plots' legends."""
    out = {}
    for f in run.scaling.get("fits", []):
        key = (f.get("impl"), f.get("metric"), *(f.get(k) for k in CONFIG_FIELDS))
        if f.get("kv_equals_seq_len", True):
            out[key] = f
    return out


def crossover_lines(run) -> list[str]:
    return [f"{c['faster_above']} overtakes {c['faster_below']} near seq_len {c['seq_len']} "
            f"({c['metric']}, {c['dtype']}, {mask_name(c['causal'])})"
            for c in run.scaling.get("crossovers", [])]
