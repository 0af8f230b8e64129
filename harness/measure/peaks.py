"""What this machine can do at best, measured once per run: matmul TFLOP/s per (device, dtype)
and memory bandwidth per device. Records report `pct_of_peak` and `pct_of_bandwidth` against
these, so "40 TFLOP/s" reads as "half of what this GPU's matmul reaches" rather than a number
without a scale.

Measured with torch (a core dependency) in the torch worker, whatever framework a case uses:
the peak belongs to the machine, not to a library. Timed by the clock a torch case on the same
device gets (harness.measure.clocks: CUDA events and the L2 flush on a GPU), named in `timer`.
"""
from __future__ import annotations

from harness.measure import clocks
from harness.measure.resolution import measure_resolutions
from harness.measure.timer import HOST, measure
from harness.spec import TimingSettings

MATMUL_N = {"cpu": 1024, "cuda": 8192}  # large enough to reach the plateau, small enough to be quick
COPY_BYTES = {"cpu": 256 * 2**20, "cuda": 2 * 2**30}
SETTINGS = TimingSettings(warmup_s=0.1, min_samples=3, max_samples=50, budget_s=0.3)


def timer_for(device: str) -> str:
    """The timer of the peaks on `device`: the one a torch case there is timed with."""
    return clocks.default_timer(device, "torch")


def _measure(device: str, call, sync):
    return measure(call, sync, SETTINGS, clocks.sample_clock(timer_for(device), device))


def _sync_for(device: str):
    import torch

    if device.startswith("cuda"):
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def matmul_tflops(device: str, dtype: str) -> float:
    """2·n³ / median time of an n×n matmul."""
    import torch

    n = MATMUL_N[device.split(":")[0]]
    a = torch.randn(n, n, device=device).to(getattr(torch, dtype))
    b = torch.randn(n, n, device=device).to(getattr(torch, dtype))
    out = torch.empty(n, n, device=device, dtype=a.dtype)
    stats = _measure(device, lambda: torch.mm(a, b, out=out), _sync_for(device))
    return 2 * n**3 / stats.median / 1e12


def bandwidth_gbs(device: str) -> float:
    """Bytes read plus bytes written by a large copy into an existing buffer, per second."""
    import torch

    count = COPY_BYTES[device.split(":")[0]] // 4
    src = torch.ones(count, device=device)
    dst = torch.empty_like(src)
    stats = _measure(device, lambda: dst.copy_(src), _sync_for(device))
    return 2 * count * 4 / stats.median / 1e9


def resolution_timers(device: str) -> list[str]:
    """The sample clocks a case on `device` may get (a graph replay shares the event clock's)."""
    return [HOST, clocks.CUDA_EVENT] if device.startswith("cuda") else [HOST]


def measure_peaks(targets: list[tuple[str, str]]) -> dict:
    """{device: {"matmul_tflops": {dtype: x}, "bandwidth_gbs": y, "timer_resolution_s": {timer:
    s}}} for the (device, dtype) pairs (harness.measure.resolution for the last). A figure that cannot be measured (a dtype the device's matmul lacks, a device this torch
    cannot reach) is left out, its error kept under the entry's "errors" (by dtype, and
    "bandwidth"), so the figures that were measured stay."""
    peaks: dict = {}
    for device, dtype in sorted(set(targets)):
        entry = peaks.setdefault(device, {"matmul_tflops": {}, "matmul_n": MATMUL_N[device.split(":")[0]],
                                          "timer": timer_for(device)})
        try:
            entry["matmul_tflops"][dtype] = matmul_tflops(device, dtype)
        except Exception as exc:  # noqa: BLE001 — one missing figure must not cost the others
            entry.setdefault("errors", {})[dtype] = _error_line(exc)
    for device, entry in peaks.items():
        try:
            entry["bandwidth_gbs"] = bandwidth_gbs(device)
        except Exception as exc:  # noqa: BLE001 — as for the matmul
            entry.setdefault("errors", {})["bandwidth"] = _error_line(exc)
        try:
            entry["timer_resolution_s"] = measure_resolutions(device, resolution_timers(device))
        except Exception as exc:  # noqa: BLE001 — as for the matmul
            entry.setdefault("errors", {})["timer_resolution"] = _error_line(exc)
    return peaks


def _error_line(exc: Exception) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0]


def pct_of_peak(record: dict, peaks: dict) -> float | None:
    """Achieved TFLOP/s as a percentage of the measured matmul peak for the record's device/dtype."""
    peak = peaks.get(record["device"], {}).get("matmul_tflops", {}).get(record["dtype"])
    if not peak or not record.get("tflops"):
        return None
    return 100.0 * record["tflops"] / peak


def pct_of_bandwidth(record: dict, peaks: dict) -> float | None:
    """Achieved GB/s as a percentage of the measured copy bandwidth of the record's device."""
    bandwidth = peaks.get(record["device"], {}).get("bandwidth_gbs")
    if not bandwidth or not record.get("gbps"):
        return None
    return 100.0 * record["gbps"] / bandwidth


def beyond_cache(record: dict) -> bool:
    """Whether one call moves at least as many bytes as the copy that measured the bandwidth: a
    smaller working set may be served from cache, faster than the copy's memory bandwidth."""
    return (record.get("bytes_moved") or 0) >= COPY_BYTES[record["device"].split(":")[0]]
