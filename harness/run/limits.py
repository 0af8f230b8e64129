"""`--mem-limit`: cap what one case may allocate, and read how much a failed allocation asked for.

On the CPU the cap is RLIMIT_DATA (heap and private mappings), set before each case to what the
worker already holds plus the limit, so imports, inputs and the reference never count against
it. On CUDA it is torch's per-process memory fraction of the device.
"""
from __future__ import annotations

import re
import resource

from harness.units import size_bytes


def _data_in_use() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    raise OSError("VmData not found in /proc/self/status")


def cap_cpu(limit_bytes: int | None) -> None:
    """Allow the process `limit_bytes` more data memory than it holds now (None: no cap)."""
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    soft = hard if limit_bytes is None else _data_in_use() + limit_bytes
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def cap_cuda(device: str, limit_bytes: int | None) -> None:
    """torch's caching allocator refuses allocations beyond this share of the device. "cuda"
    (no index) is the current device: torch takes None for it, never the bare name."""
    import torch

    index = torch.device(device).index
    total = torch.cuda.get_device_properties(index).total_memory
    fraction = 1.0 if limit_bytes is None else min(1.0, limit_bytes / total)
    torch.cuda.set_per_process_memory_fraction(float(fraction), index)


_SIZE_PATTERNS = (
    (re.compile(r"tried to allocate (\d+) bytes", re.I), lambda m: int(m.group(1))),
    (re.compile(r"tried to allocate ([\d.]+) ?([KMGTPEZY]i?B)", re.I),
     lambda m: size_bytes(m.group(1), m.group(2))),
    (re.compile(r"unable to allocate ([\d.]+) ?([KMGTPEZY]i?B)", re.I),
     lambda m: size_bytes(m.group(1), m.group(2))),
)


_TF_SHAPE = re.compile(r"OOM when allocating tensor with shape\[([\d,\s]*)\] and type (\w+)")
_TF_ITEMSIZE = {"float": 4, "double": 8, "half": 2, "bfloat16": 2, "int32": 4, "int64": 8}


def requested_bytes(message: str) -> int | None:
    """The allocation size an out-of-memory message names, when it names one."""
    for pattern, convert in _SIZE_PATTERNS:
        match = pattern.search(message)
        if match:
            return convert(match)
    match = _TF_SHAPE.search(message)  # TensorFlow names the tensor's shape and type instead
    if match and match.group(2) in _TF_ITEMSIZE:
        count = 1
        for dim in filter(None, (d.strip() for d in match.group(1).split(","))):
            count *= int(dim)
        return count * _TF_ITEMSIZE[match.group(2)]
    return None
