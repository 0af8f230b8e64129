"""The one record builder: every path that writes a record (run, A/B) goes through `case_record`,
so every record carries the same derived figures (FLOPs, TFLOP/s, percent of peak)."""
from __future__ import annotations

from harness.measure.flops import case_flops, tflops
from harness.measure.peaks import pct_of_peak
from harness.store.records import make_record


def case_record(case, result: dict, *, threads: int, worker: str, started_at: str,
                wall_s: float, peaks: dict | None = None) -> dict:
    """The record of one case from what its worker (or the harness) said about it."""
    flops = case_flops(case)
    record = make_record(case, result, flops=flops, tflops=tflops(flops, result.get("median_s")),
                         threads=threads, worker=worker, started_at=started_at,
                         wall_s=round(wall_s, 4))
    record["pct_of_peak"] = pct_of_peak(record, peaks or {})
    return record
