"""The scaling views: the fitted exponents, the local exponents and the crossovers as the
reports show them, read from the run's scaling.json, or computed from its records when the run
never got to write one (or wrote one before local exponents existed)."""
from __future__ import annotations

import json
from pathlib import Path

from harness.analysis import scaling
from harness.analysis.crossovers import crossover_text
from harness.case import config_key, named_config


def _computed(records: list[dict]) -> dict:
    rows = scaling.fits(records)
    return {"fit_points": scaling.FIT_POINTS, "fits": rows, "local": scaling.local_rows(rows),
            "crossovers": scaling.crossovers(records, min_ratio=scaling.CROSSOVER_MARGIN)}


def load_scaling(path: Path, records: list[dict]) -> tuple[dict, str]:
    """(fits, local exponents and crossovers, where they came from: "scaling.json", "computed"
    or ""). A scaling.json from before local exponents existed is recomputed from the same
    records with today's tests, so no report shows an exponent the test would reject."""
    file = path / scaling.SCALING
    if file.exists():
        try:
            data = json.loads(file.read_text())
            if isinstance(data.get("fits"), list):
                if not isinstance(data.get("local"), list):
                    return _computed(records), "scaling.json"
                data.setdefault("crossovers", [])
                data.setdefault("fit_points", scaling.FIT_POINTS)
                return data, "scaling.json"
        except (OSError, ValueError, AttributeError):
            pass  # unreadable: computed from the records below, and the report says so
    if not any(r["status"] == "ok" for r in records):
        return {"fit_points": scaling.FIT_POINTS, "fits": [], "local": [], "crossovers": []}, ""
    return _computed(records), "computed"


def _judged(f: dict) -> bool:
    """A fit row with a verdict: an exponent, or enough points to reject one power law."""
    return f.get("exponent") is not None or f.get("power_law") is False


def scaling_table(run) -> tuple[list[str], list[list[str]]]:
    fitted = [f for f in run.scaling.get("fits", []) if _judged(f)]
    return scaling.format_fits(fitted) if fitted else ([], [])


def local_table(run) -> tuple[list[str], list[list[str]]]:
    """The local exponents between neighbouring seq_lens, per implementation and metric."""
    rows = [f for f in run.scaling.get("fits", []) if f.get("local")]
    return scaling.format_local(rows) if rows else ([], [])


def power_law_notes(run) -> list[str]:
    """Why a row shows no single exponent: the test that rejected it, in words."""
    return [f"{f['impl']} {f['metric']} ({named_config(f)}): {f['note']}"
            for f in run.scaling.get("fits", []) if f.get("power_law") is False]


def scaling_gaps(run) -> list[str]:
    """Why some implementations have no exponent (fewer than 3 seq_lens with a value)."""
    notes = {}
    for f in run.scaling.get("fits", []):
        if f.get("exponent") is None and f.get("metric") == "time" \
                and f.get("power_law") is not False:
            notes.setdefault(f.get("note") or "not enough points", set()).add(f["impl"])
    return [f"{', '.join(sorted(impls))}: {note}" for note, impls in sorted(notes.items())]


def fit_lookup(run) -> dict[tuple, dict]:
    """{(impl, metric, config...): fit row} for the plots' legends."""
    out = {}
    for f in run.scaling.get("fits", []):
        if f.get("kv_equals_seq_len") is False:
            continue  # an older file's rectangular series, keyed apart from today's
        out[(f.get("impl"), f.get("metric"), *config_key(f))] = f
    return out


def crossover_lines(run) -> list[str]:
    return [crossover_text(c) for c in run.scaling.get("crossovers", [])]
