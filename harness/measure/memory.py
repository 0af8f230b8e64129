"""Peak-memory probes, one per framework/device: the extra memory one call needs.

"Extra" means memory allocated during the call that is live at its peak: temporaries and the
output count, the inputs made in `prepare` do not. The probe runs `prepared.call()` once and
`prepared.sync()`, in a pass of its own (never while timing: tracing allocations slows them).

- torch on CUDA: the caching allocator's own counters (`max_memory_allocated` minus what was
  allocated before), i.e. tensor bytes, not the cache the allocator reserved.
- TensorFlow (CPU and GPU): `tf.config.experimental.get_memory_info`, TF's allocator counters.
  On CPU they exist only with TF's oneDNN allocator (the x86 default; TF_ENABLE_ONEDNN_OPTS=0
  removes them and reset_memory_stats raises ValueError). That allocator is a pool (BFC), so
  memray would see only its growth, never reuse; but without oneDNN TF mallocs each tensor and
  memray sees it all, so memray is the fallback. The counters count BFC chunks, which can
  exceed a request (up to 2x) when a free chunk is reused whole: history can inflate a peak.
  On a GPU there is no fallback: memray sees host memory, not the device's, so a GPU without
  counters reports None with the reason.
- JAX on a GPU (jax and keras-jax): the device's own counters, `device.memory_stats()`
  (`bytes_in_use`, `peak_bytes_in_use`). JAX cannot reset the peak: it is the process's peak
  so far. So the probe reads both before the call: when the call raises the peak, the new peak
  minus what was in use before is exactly the call's extra memory; when it does not (the timed
  calls of the same case, or an earlier larger case, already set a higher one), the call's
  peak is hidden, and the probe reports None with the most it can be, never an earlier peak.
- torch on CPU and NumPy: memray, which intercepts malloc/calloc/posix_memalign/mmap and so
  sees what torch's and NumPy's allocators take from the C library (tracemalloc sees only
  Python's allocator, not torch's). Memray ignores frees of blocks allocated before it started,
  so its peak is the peak of the call's own allocations, never the inputs.

No collection runs during the probed call (freeing older garbage mid-call would hide some of
its peak). Framework imports happen inside the probes: the module itself imports none.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

from harness.constants import install_command
from harness.measure.timer import gc_paused

MEMRAY_HINT = "memray not installed: pip install memray"


# What each probe measures, in the report's words (the method text is built from these).
METHODS = {
    "memray": "memray's native-allocation tracker (sees malloc/mmap of torch's and NumPy's "
              "allocators): the peak of the call's own allocations",
    "torch.cuda.max_memory_allocated": "torch's CUDA caching allocator counters: tensor bytes "
                                       "allocated during the call, not the reserved cache",
    "tf.config.experimental.get_memory_info": "TensorFlow's allocator counters (a pool: a reused "
                                              "chunk can count up to 2× its request)",
    "jax.Device.memory_stats": "JAX's device allocator counters: the rise of the process's "
                               "peak over what was in use before the call (JAX cannot reset "
                               "the peak, so a call that stays under an earlier one is None)",
}
JAX_FAMILIES = ("jax", "keras-jax")  # frameworks whose GPU memory JAX's allocator holds


def measure_peak(prepared, framework: str, device: str,
                 workdir: str | None = None) -> tuple[int | None, str, str]:
    """(peak_bytes, mem_method, note) for one call of `prepared`: its extra memory at the peak.

    peak_bytes is None when this framework/device has no probe here (mem_method "none" and the
    note says why). Exceptions from the call itself propagate, as they do when timing, so the
    harness turns them into the case's status (oom, error).
    """
    kind = device.split(":")[0]
    if framework == "torch" and kind == "cuda":
        return _torch_cuda_peak(prepared, device)
    if framework == "tensorflow" and kind in ("cpu", "cuda"):
        return _tf_peak(prepared, device, workdir)
    if framework in JAX_FAMILIES and kind == "cuda":
        return _jax_gpu_peak(prepared, device)
    if framework in ("torch", "numpy") and kind == "cpu":
        return _memray_peak(prepared, workdir)
    return None, "none", f"no memory probe for framework {framework!r} on device {device!r}"


def _torch_cuda_peak(prepared, device: str) -> tuple[int | None, str, str]:
    import torch

    dev = torch.device(device)
    with gc_paused():
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev)
        out = prepared.call()
        prepared.sync()
        peak = torch.cuda.max_memory_allocated(dev) - before
        del out  # alive until the peak was read
    return peak, "torch.cuda.max_memory_allocated", ""


def tf_device_name(device: str) -> str:
    """TensorFlow's name for a harness device: cpu -> CPU:0, cuda or cuda:N -> GPU:N."""
    if device == "cpu":
        return "CPU:0"
    return f"GPU:{device.partition(':')[2] or 0}"


def _tf_peak(prepared, device: str, workdir: str | None) -> tuple[int | None, str, str]:
    """TF's allocator counters; memray when this device keeps none (oneDNN off on CPU)."""
    try:
        import tensorflow as tf
    except ImportError:
        return None, "none", f"tensorflow not installed: {install_command('tf')}"
    stats = tf.config.experimental
    dev = tf_device_name(device)
    with gc_paused():
        try:
            stats.reset_memory_stats(dev)
            before = stats.get_memory_info(dev)["current"]
        except (ValueError, RuntimeError, tf.errors.OpError) as exc:
            why = f"TF memory stats unavailable for {dev}: {type(exc).__name__}: {exc}"
            return _tf_fallback(prepared, device, workdir, why)
        out = prepared.call()
        prepared.sync()
        info = stats.get_memory_info(dev)
        del out  # alive until the peak was read
    if info["peak"] == 0 and info["current"] == 0:
        # Even the inputs made in `prepare` are not counted: this allocator keeps no stats.
        return _tf_fallback(prepared, device, workdir, f"TF memory stats for {dev} are all zeros")
    return info["peak"] - before, "tf.config.experimental.get_memory_info", ""


def _tf_fallback(prepared, device: str, workdir, why: str) -> tuple[int | None, str, str]:
    """memray instead: sound when TF has no stats on the CPU, since its plain CPU allocator has
    no pool; on a GPU memray would see host memory, so nothing is measured."""
    if device != "cpu":
        return None, "none", why
    peak, method, note = _memray_peak(prepared, workdir)
    return peak, method, "; ".join(filter(None, [why + ", measured with memray instead", note]))


def jax_peak_from_stats(before: dict, after: dict) -> tuple[int | None, str]:
    """(extra bytes, note) from `memory_stats()` read before and after one call (see above)."""
    if "peak_bytes_in_use" not in before or "bytes_in_use" not in before:
        return None, "this JAX device keeps no peak_bytes_in_use"
    in_use, old_peak, new_peak = (before["bytes_in_use"], before["peak_bytes_in_use"],
                                  after["peak_bytes_in_use"])
    if new_peak > old_peak:
        return new_peak - in_use, ""
    return None, (f"JAX cannot reset its peak, and the call stayed under the process's earlier "
                  f"peak: its extra memory is at most {old_peak - in_use} bytes")


def _jax_gpu_peak(prepared, device: str) -> tuple[int | None, str, str]:
    import jax

    dev = jax.devices("gpu")[int(device.partition(":")[2] or 0)]
    with gc_paused():
        before = dev.memory_stats() or {}
        out = prepared.call()  # JAX's calls block until their outputs are ready
        prepared.sync()
        after = dev.memory_stats() or {}
        del out  # alive until the peak was read
    peak, note = jax_peak_from_stats(before, after)
    return peak, "jax.Device.memory_stats" if peak is not None else "none", note


def _memray_peak(prepared, workdir: str | None) -> tuple[int | None, str, str]:
    """memray's peak heap over one call; the capture file lives in a temp dir removed after.

    The aggregated file format keeps the capture small (one record per allocation site), and
    its header holds the peak. Python-allocator tracing stays off: pymalloc's arenas are
    counted as the native blocks they are, which is cheaper and enough for an attention call.
    Starting can fail: another Tracker is active (one per process, e.g. under `memray run`),
    or its thread cannot start (it needs ~8 MiB of stack, which counts against RLIMIT_DATA);
    after a failed start memray 1.20 raises AssertionError on every later start. Either way
    the probe reports it and measures nothing; the case itself is unaffected.
    """
    try:
        import memray
    except ImportError:
        return None, "none", MEMRAY_HINT
    if workdir is not None:
        os.makedirs(workdir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="attnbench-memray-", dir=workdir)
    try:
        path = os.path.join(tmp, "capture.bin")  # a fresh name: memray never overwrites
        tracker = memray.Tracker(path, native_traces=False,
                                 file_format=memray.FileFormat.AGGREGATED_ALLOCATIONS)
        with gc_paused(), contextlib.ExitStack() as stack:
            try:
                stack.enter_context(tracker)
            except Exception as exc:  # the tool failed, not the case: say so, measure nothing
                return None, "none", f"memray could not start: {type(exc).__name__}: {exc}"
            out = prepared.call()
            prepared.sync()
            stack.close()  # stop tracking; the output stays alive until the peak is read
            with contextlib.closing(memray.FileReader(path)) as reader:
                peak = reader.metadata.peak_memory
            del out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return peak, "memray", ""
