"""Run one worker family's cases (any level, any mode) in a process of their own.

TensorFlow, JAX and PyTorch must never share a process, and the pytest process imports torch,
so tests/test_adapters.py, tests/test_layers.py and tests/test_fwd_bwd.py start this script
(with the family's environment: Keras' backend). It reads JSON on stdin:
{"family": name, "cases": [case dicts], "full": [case ids]}; the cases named in "full" go through
`harness.execute.execute` (the worker's own path: timing, memory), the others through a quick
check (prepare, one call, `check_output`), with the registered adapter of that name. It prints
one line `RESULT <json>` with the records and which frameworks got in. Only that family's
adapters may be named.
"""
from __future__ import annotations

import json
import sys

from harness import registry
from harness.run.execute import execute
from harness.spec import Case
from layer_cases import FAST, quick_check  # this script's folder is on sys.path


def main() -> None:
    request = json.load(sys.stdin)
    full = set(request.get("full", ()))
    family = request.get("family", "tensorflow")
    records = {}
    for data in request["cases"]:
        case = Case.from_dict(data)
        adapter = registry.get(case.impl)
        if adapter.framework != family:
            raise SystemExit(f"{case.impl} is not a {family}-family adapter")
        run = execute(case, adapter, FAST) if case.case_id in full else quick_check(case, adapter)
        records[case.case_id] = run
    print("RESULT " + json.dumps({
        "records": records,
        "tensorflow_imported": "tensorflow" in sys.modules,
        "torch_imported": "torch" in sys.modules,
        "jax_imported": "jax" in sys.modules,
    }), flush=True)


if __name__ == "__main__":
    main()
