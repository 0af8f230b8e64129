"""The one record builder: every path that writes a record (run, A/B) goes through `case_record`,
so every record carries the same derived figures (FLOPs, TFLOP/s, bytes moved, GB/s and their
percent of the machine's peaks)."""
from __future__ import annotations

from harness.measure.flops import case_flops, tflops
from harness.measure.peaks import pct_of_bandwidth, pct_of_peak
from harness.measure.traffic import case_bytes, gbps
from harness.store.records import make_record


def case_record(case, result: dict, *, threads: int, worker: str, started_at: str,
                wall_s: float, peaks: dict | None = None) -> dict:
    """The record of one case from what its worker (or the harness) said about it."""
    flops, moved, median = case_flops(case), case_bytes(case), result.get("median_s")
    record = make_record(case, result, flops=flops, tflops=tflops(flops, median),
                         bytes_moved=moved, gbps=gbps(moved, median),
                         threads=threads, worker=worker, started_at=started_at,
                         wall_s=round(wall_s, 4))
    record["pct_of_peak"] = pct_of_peak(record, peaks or {})
    record["pct_of_bandwidth"] = pct_of_bandwidth(record, peaks or {})
    return record
