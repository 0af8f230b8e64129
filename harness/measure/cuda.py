"""Sample clocks for torch on CUDA (see harness.measure.timer, step 4): CUDA events around each
sample with the L2 flushed before it, and CUDA-graph replay timed the same way.

Why events: the host clock after `torch.cuda.synchronize()` adds the launch and the sync's own
latency to every sample; a pair of `torch.cuda.Event(enable_timing=True)` recorded on the stream
around the block measures the GPU's time between them. Why the flush: a sample that finds its
inputs in the L2 left by the previous one measures a warm cache no real model call sees, so
before each sample a buffer of FLUSH_FACTOR x the device's L2 is zeroed, on the same stream
before the start event, outside the timed region (as `triton.testing.do_bench` does).

torch is imported inside the functions: the harness core never imports it at import time. The
clocks take their events, flush and capture as arguments, so their logic runs without a GPU.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

CUDA_EVENT = "cuda_event"
CUDA_GRAPH = "cuda_graph"
FLUSH_FACTOR = 2  # the flush buffer is this many times the device's L2
FLUSH_ROUND_BYTES = 2**20  # buffer sizes are whole MiB
# triton.testing.do_bench's buffer: used when the device reports no L2 size (property missing
# or 0); more than twice the L2 of current data-centre GPUs (H100/H200: 50 MiB)
FALLBACK_FLUSH_BYTES = 256 * 2**20
GRAPH_WARMUP_CALLS = 3  # side-stream calls before capture, as torch's CUDA-graph docs do


class GraphCaptureError(RuntimeError):
    """The call could not be captured into a CUDA graph: the case is an error, never timed
    another way."""


def flush_bytes(l2_bytes: int | None) -> int:
    """Size of the flush buffer for an L2 of `l2_bytes`: FLUSH_FACTOR x L2, rounded up to a
    whole FLUSH_ROUND_BYTES; FALLBACK_FLUSH_BYTES when the size is unknown (None or 0)."""
    if not l2_bytes or l2_bytes < 0:
        return FALLBACK_FLUSH_BYTES
    return math.ceil(FLUSH_FACTOR * l2_bytes / FLUSH_ROUND_BYTES) * FLUSH_ROUND_BYTES


def l2_bytes(properties) -> int | None:
    """The L2 size a `torch.cuda.get_device_properties` object reports (None where it has none)."""
    return getattr(properties, "L2_cache_size", None) or None


class EventClock:
    """CUDA events around each block; `flush()` before each, outside the timed region."""

    name = CUDA_EVENT

    def __init__(self, new_event: Callable[[], Any], flush: Callable[[], None]):
        self.begin, self.end = new_event(), new_event()
        self.flush = flush

    def ready(self, call):
        return call

    def before_sample(self) -> None:
        self.flush()  # queued on the stream before the start event: not in the sample

    def start(self) -> None:
        self.begin.record()

    def stop(self) -> None:
        self.end.record()  # before the host's sync, so its latency is not in the sample

    def elapsed_s(self, wall_ns: int) -> float:
        return self.begin.elapsed_time(self.end) / 1e3  # milliseconds between the events

    def release(self) -> None:
        return None


class GraphClock(EventClock):
    """The call captured once (`capture(call)` -> the graph) and replayed for every call of
    every sample, timed with events like EventClock."""

    name = CUDA_GRAPH

    def __init__(self, new_event, flush, capture: Callable[[Callable[[], Any]], Any]):
        super().__init__(new_event, flush)
        self.capture = capture
        self.graph = None

    def ready(self, call):
        if self.graph is None:
            self.graph = self.capture(call)
        return self.graph.replay

    def release(self) -> None:
        self.graph = None  # its memory pool goes with it


def capture_graph(call, warmup_calls: int = GRAPH_WARMUP_CALLS):
    """`call` captured into a torch.cuda.CUDAGraph, after `warmup_calls` on a side stream (as
    torch documents: lazy initialisation must not happen inside the capture). The output of
    the captured call is kept on the graph (`static_output`): replay writes into it."""
    import torch

    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup_calls):
                call()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_output = call()
        torch.cuda.synchronize()
    except Exception as exc:
        raise GraphCaptureError(f"CUDA graph capture failed: {type(exc).__name__}: "
                                f"{' '.join(str(exc).split())}") from exc
    graph.static_output = static_output
    return graph


def flush_buffer(device: str) -> Callable[[], Any]:
    """Zeroing a buffer of `flush_bytes(L2 of device)`: the flush, allocated once per clock."""
    import torch

    nbytes = flush_bytes(l2_bytes(torch.cuda.get_device_properties(torch.device(device))))
    return torch.empty(nbytes // 4, dtype=torch.int32, device=device).zero_


def _event_factory(device: str):
    """New timing events on `device`'s stream. "cuda" (no index, as the suites say) is the
    current device, which `torch.cuda.set_device` refuses: it is set only for "cuda:N"."""
    import torch

    index = torch.device(device).index
    if index is not None:
        torch.cuda.set_device(index)  # events and the stream of the case's device
    return lambda: torch.cuda.Event(enable_timing=True)


def event_clock(device: str) -> EventClock:
    """EventClock on `device`, with its flush buffer allocated now (outside any memory cap)."""
    return EventClock(_event_factory(device), flush_buffer(device))


def graph_clock(device: str) -> GraphClock:
    """GraphClock on `device`: events, the flush buffer, and `capture_graph`."""
    return GraphClock(_event_factory(device), flush_buffer(device), capture_graph)
