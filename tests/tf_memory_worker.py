"""Measure TensorFlow peak memory in a process of its own, for tests/test_memory.py.

TensorFlow and PyTorch must never share a process, and the pytest process imports torch, so
the test starts this script. It probes tf.naive (float32, batch 1, 8 heads, the seq_len given
as argv[1], head_dim 64, non-causal) through the real adapter, three times, after a call that
returns an existing tensor and one that makes a known 64 MiB tensor; prints `RESULT <json>`.
"""
from __future__ import annotations

import json
import sys

from harness.problem.truth import problem
from harness.measure.memory import measure_peak
from harness.spec import Case
from impls.base import Prepared
from impls.tf_keras import ADAPTERS

MIB = 1 << 20


def probe(prepared) -> dict:
    peak, method, note = measure_peak(prepared, "tensorflow", "cpu")
    return {"peak": peak, "method": method, "note": note}


def bare(call) -> Prepared:
    return Prepared(call=call, to_numpy=lambda out: out.numpy(), out_dtype=lambda out: "")


def main() -> None:
    import tensorflow as tf

    result = {"tensorflow": tf.__version__}
    # The bare checks come first, in a fresh pool: TF's CPU counters count the allocator's
    # chunks, and a chunk left by an earlier, larger free can be handed out whole (up to 2x).
    with tf.device("/CPU:0"):
        existing = tf.ones([16 * MIB // 4])  # 16 MiB made before the probe
        result["existing"] = probe(bare(lambda: existing))
        result["alloc_64mib"] = probe(bare(lambda: tf.ones([64 * MIB // 4])))

    seq_len = int(sys.argv[1]) if len(sys.argv) > 1 else 2048
    adapter = {a.name: a for a in ADAPTERS}["tf.naive"]
    case = Case(impl="tf.naive", dtype="float32", batch=1, heads=8, seq_len=seq_len,
                head_dim=64, causal=False)
    inputs, _ = problem(case)
    prepared = adapter.prepare(case, inputs)
    try:
        result["naive"] = [probe(prepared) for _ in range(3)]  # repeated probes agree
    finally:
        prepared.close()
    result["torch_imported"] = "torch" in sys.modules
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
