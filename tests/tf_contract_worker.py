"""Run the TensorFlow/Keras adapter contract cases in a process of their own.

TensorFlow and PyTorch must never share a process, and the pytest process imports torch, so
tests/test_adapters.py starts this script instead. It reads a JSON list of case dicts on stdin,
runs each through `harness.execute.execute` (the worker's own path) with the adapters of
impls.tf_keras, and prints one line `RESULT <json>` with the records and whether torch got in.
"""
from __future__ import annotations

import json
import sys

from harness.execute import execute
from harness.spec import Case
from harness.timing import TimingSettings
from impls.tf_keras import ADAPTERS

SETTINGS = TimingSettings(warmup_s=0.001, min_samples=2, max_samples=3, budget_s=0.01)


def main() -> None:
    adapters = {a.name: a for a in ADAPTERS}
    records = {}
    for data in json.load(sys.stdin):
        case = Case.from_dict(data)
        records[case.case_id] = execute(case, adapters[case.impl], SETTINGS)
    print("RESULT " + json.dumps({
        "records": records,
        "tensorflow_imported": "tensorflow" in sys.modules,
        "torch_imported": "torch" in sys.modules,
    }), flush=True)


if __name__ == "__main__":
    main()
