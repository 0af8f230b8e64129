"""Where each measured kernel sits under this machine's roofline: its arithmetic intensity
(FLOPs of the one FLOP model over the bytes it must move to and from memory), the roof at that
intensity, min(matmul peak, intensity × copy bandwidth), both measured by the run
(`harness.measure.peaks`, env.json `peaks`), and the share of that roof it achieved.

The bytes model, per call, in the case's dtype (B·H query heads, Hkv K/V heads, Nq queries,
Nk keys, head size D). Q, O, dO and dQ count per query head, K, V, dK and dV per K/V head and
per real (unpadded) key, as in the one model of what a problem requires
(`harness.measure.traffic`), on top of which each class adds what it moves itself:

- a *materialising* implementation (the textbook formula: numpy, *.naive, the math backend,
  Keras and TensorFlow ops) moves that model's Q, K, V, O, and also writes the Nq×Nk score
  matrix, reads it for the softmax, writes the probabilities and reads them for P·V: 4·Nq·Nk
  per query head, masked or not (it masks a full matrix, and reads every key for it);
- a *fused* kernel (flash, memory-efficient, cuDNN, xformers) keeps scores on chip, reads Q
  and writes O once, and walks queries in blocks of TILE rows, reading K and V once per block:
  2·D·Hkv times the keys each block sees (all of them; under a causal mask only those up to
  the block's last row, by the mask's alignment, and with a window only those the window of
  one of its rows reaches);
- fwd_bwd adds a backward: materialising, the model's backward (reads Q, K, V, O, dO, writes
  dQ, dK, dV) and six more passes over Nq×Nk (read P, write and read dP, write dS, read dS
  for dQ and for dK); fused, walks key blocks of TILE, for each re-reading Q, O and dO and
  reading and writing dQ for the rows the block serves, and reads K, V and writes dK, dV once.

Traffic that stays in cache is counted as moved: the roof is the DRAM one. A point above it
says the model overcounts for that case (its working set fit in cache) and is marked so.
The class comes from the kernel the record says ran (torch SDPA records it), else from the
implementation's name; one not known to be fused counts as materialising. Layers (mha,
encoder) have no bytes model here and are left out, with the reason.
"""
from __future__ import annotations

import dataclasses
import math

from harness.case import FIELD_NAMES, Case, config_dict, sweep_len, value_of
from harness.constants import ITEMSIZE
from harness.measure.traffic import (backward_bytes, forward_bytes, key_counts, key_elements,
                                     key_gradient_elements, query_elements)

TILE = 128  # rows per block of a fused kernel (FlashAttention-2's and torch's usual size)
FUSED_KERNELS = ("flash_attention", "efficient_attention", "cudnn_attention")
FUSED_NAMES = ("flash", "efficient", "cudnn", "xformers", "mem_eff", "fused")
MATERIALISING, FUSED = "materialising", "fused"


def impl_class(record: dict) -> tuple[str, str]:
    """(class, why) of the implementation that produced the record."""
    kernel = record.get("kernel") or ""
    if kernel:
        if any(k in kernel for k in FUSED_KERNELS):
            return FUSED, f"ran {kernel}"
        return MATERIALISING, f"ran {kernel}"
    name = record["impl"].lower()
    hit = next((word for word in FUSED_NAMES if word in name), None)
    if hit:
        return FUSED, f"a {hit} kernel by its name"
    return MATERIALISING, "not known to be fused"


def _keys_seen(nq: int, nk: int, causal: bool, tile: int, offset: int = 0,
               window: int = 0) -> int:
    """Keys read summed over query blocks of `tile` rows (under a causal mask, a block reads
    the keys its rows see: up to its last row + `offset`, the mask's causal_offset, and with a
    `window` from its first row's window on)."""
    total = 0
    for start in range(0, nq, tile):
        last = min(start + tile, nq) - 1
        if not causal:
            total += nk
            continue
        high = min(nk, max(0, last + 1 + offset))
        low = min(nk, max(0, start + 1 + offset - window)) if window else 0
        total += max(0, high - low)
    return total


def _rows_served(nq: int, nk: int, causal: bool, tile: int, offset: int = 0,
                 window: int = 0) -> int:
    """Query rows summed over key blocks of `tile` keys (under a causal mask, a block serves
    the rows that see one of its keys: row + `offset` >= its first key, and with a `window`
    row + `offset` < its last key + `window`)."""
    total = 0
    for start in range(0, nk, tile):
        if not causal:
            total += nq
            continue
        first_row = max(0, start - offset)
        end_row = nq if not window else \
            min(nq, max(0, min(start + tile, nk) - 1 - offset + window))
        total += max(0, end_row - first_row)
    return total


def _record_case(record: dict) -> Case:
    """The case a record describes (a field the record predates takes its default)."""
    return Case(**{name: value_of(record, name) for name in FIELD_NAMES})


def bytes_moved(record: dict, cls: str) -> int:
    """Bytes one call moves by the model above."""
    from harness.problem.inputs import causal_offset

    case = _record_case(record)
    backward = case.mode == "fwd_bwd"
    if cls == MATERIALISING:  # it computes every score, whatever the mask keeps
        dense = dataclasses.replace(case, causal=False, window=0)
        scores = case.batch * case.heads * case.seq_len * case.seq_len_kv
        moved = forward_bytes(dense) + ITEMSIZE[case.dtype] * 4 * scores
        if backward:
            moved += backward_bytes(dense) + ITEMSIZE[case.dtype] * 6 * scores
        return moved
    nq, d, causal, window = case.seq_len, case.head_dim, case.causal, case.window
    keys = key_counts(case)  # per sequence: a mask is aligned to each one's real keys
    seen = sum(_keys_seen(nq, n, causal, TILE, causal_offset(nq, n, case.causal_align), window)
               for n in keys)
    elements = 2 * query_elements(case) + 2 * d * case.kv_heads * seen
    if backward:
        served = sum(_rows_served(nq, n, causal, TILE, causal_offset(nq, n, case.causal_align),
                                  window) for n in keys)
        elements += 2 * key_elements(case) + 2 * key_gradient_elements(case) + \
            5 * d * case.heads * served
    return elements * ITEMSIZE[case.dtype]


def point(record: dict, peaks: dict) -> tuple[dict | None, str]:
    """(the record on the roofline, "") or (None, why it cannot be placed)."""
    if record.get("level", "kernel") != "kernel":
        return None, f"no bytes model for {record.get('level')} layers"
    if record.get("dtype") not in ITEMSIZE:
        return None, f"no item size for dtype {record.get('dtype')}"
    entry = peaks.get(record["device"]) if isinstance(peaks, dict) else None
    peak = ((entry or {}).get("matmul_tflops") or {}).get(record["dtype"])
    bandwidth = (entry or {}).get("bandwidth_gbs")
    if not peak or not bandwidth:
        return None, f"no measured matmul peak and bandwidth for {record['device']} " \
                     f"{record['dtype']}"
    flops, median = record.get("flops"), record.get("median_s")
    if not flops or not median or not math.isfinite(median) or median <= 0:
        return None, "no FLOP count or median"
    cls, why = impl_class(record)
    moved = bytes_moved(record, cls)
    intensity = flops / moved
    achieved = flops / median / 1e12
    memory_roof = intensity * bandwidth / 1e3  # TFLOP/s: FLOP/B × GB/s / 1000
    roof = min(peak, memory_roof)
    return {"case_id": record.get("case_id"), "impl": record["impl"], **config_dict(record),
            "causal": bool(record.get("causal")), "seq_len": record["seq_len"],
            "sweep_len": sweep_len(record),
            "class": cls, "class_why": why, "flops": flops, "bytes": moved,
            "intensity": intensity, "achieved_tflops": achieved, "peak_tflops": peak,
            "bandwidth_gbs": bandwidth, "roof_tflops": roof, "pct_of_roof": 100 * achieved / roof,
            "bound": "memory" if memory_roof < peak else "compute",
            "above_roof": achieved > roof, "stable": record.get("stable")}, ""


def roofline(records: list[dict], peaks: dict) -> dict:
    """{"points": every ok record placed, "left_out": {why: count}, "roofs": per (device,
    dtype) peak and bandwidth}."""
    points, left_out = [], {}
    for r in records:
        if r.get("status") != "ok":
            continue
        placed, why = point(r, peaks or {})
        if placed is None:
            left_out[why] = left_out.get(why, 0) + 1
        else:
            points.append(placed)
    roofs = sorted({(p["device"], p["dtype"], p["peak_tflops"], p["bandwidth_gbs"])
                    for p in points})
    return {"points": points, "left_out": left_out,
            "roofs": [{"device": d, "dtype": t, "peak_tflops": p, "bandwidth_gbs": b,
                       "ridge": p * 1e3 / b} for d, t, p, b in roofs]}
