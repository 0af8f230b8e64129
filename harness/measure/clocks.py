"""Which sample clock times a case (harness.measure.timer, step 4), chosen in one place.

- `cuda_event` for the torch framework on a CUDA device: CUDA events around each sample, the
  L2 flushed before it (harness.measure.cuda).
- `cuda_graph` when the timing settings ask for CUDA graphs (`--cuda-graphs`,
  `timing.cuda_graphs`): torch on CUDA only; anything else is refused, never timed another way.
- `host` everywhere else: the CPU, and the other frameworks on a GPU, whose adapters wait for
  the device inside `sync` or the call (JAX's `block_until_ready`, TensorFlow's
  `sync_devices`), so the host clock read after it includes the device's work.

Every timed record names its clock in `timer`.
"""
from __future__ import annotations

from harness.measure import cuda
from harness.measure.timer import HOST, HostClock
from harness.spec import TimingSettings

CUDA_EVENT, CUDA_GRAPH = cuda.CUDA_EVENT, cuda.CUDA_GRAPH
EVENT_FRAMEWORKS = ("torch",)  # the frameworks whose CUDA work torch's events can see

# What each timer is, in the report's words (harness.report.method builds its text from these)
TIMERS = {
    HOST: "time.perf_counter_ns around each sample, read after the call's own sync (the "
          "device's work included: torch's cuda.synchronize, JAX's block_until_ready, "
          "TensorFlow's sync_devices); no cache flush",
    CUDA_EVENT: "a pair of torch.cuda.Event(enable_timing=True) recorded on the stream around "
                "each sample, read after the device is synchronised",
    CUDA_GRAPH: "the call captured once into a torch.cuda.CUDAGraph after the warm-up ("
                f"{cuda.GRAPH_WARMUP_CALLS} calls on a side stream first, as torch documents) "
                "and replayed for every call of every sample, timed with CUDA events; a "
                "capture that fails makes the case an error",
}


class TimerUnavailable(RuntimeError):
    """The settings ask for a timer this case cannot have (CUDA graphs off torch-on-CUDA)."""


def graph_refusal(case, framework: str) -> str | None:
    """Why `case` cannot be replayed as a CUDA graph (None: it can)."""
    if not case.device.startswith("cuda"):
        return f"{case.impl} runs on {case.device}: CUDA graphs need a CUDA device"
    if framework not in EVENT_FRAMEWORKS:
        return (f"{case.impl} is a {framework} implementation: CUDA graphs are captured by "
                "torch, for torch implementations")
    return None


def default_timer(device: str, framework: str) -> str:
    """The timer of `framework`'s calls on `device` when no CUDA graphs are asked for."""
    return CUDA_EVENT if device.startswith("cuda") and framework in EVENT_FRAMEWORKS else HOST


def select_timer(case, framework: str, settings: TimingSettings) -> str:
    """The timer of `case` (its adapter's `framework`) under `settings`: one of TIMERS.
    Raises TimerUnavailable when the settings ask for CUDA graphs this case cannot have."""
    if settings.cuda_graphs:
        why = graph_refusal(case, framework)
        if why:
            raise TimerUnavailable(why)
        return CUDA_GRAPH
    return default_timer(case.device, framework)


def sample_clock(timer: str, device: str):
    """The sample clock named `timer` on `device` (CUDA ones allocate their flush buffer now)."""
    if timer == CUDA_EVENT:
        return cuda.event_clock(device)
    if timer == CUDA_GRAPH:
        return cuda.graph_clock(device)
    return HostClock()
