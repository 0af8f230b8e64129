"""One side of an A/B run: a worker process started with that side's Python interpreter.

`python -m harness.ab_worker FAMILY THREADS LOG` imports one framework family and answers
requests, one JSON object per line on stdin, one answer per line on stdout (the libraries' own
output goes to LOG). Unlike the run worker (harness.worker, a multiprocessing child of the
runner's interpreter), this one may run another interpreter (another virtualenv, another torch),
so it speaks plain JSON over pipes. It keeps one prepared case between requests, so the
orchestrator (harness.ab) can alternate blocks of samples between base and head:

  {"kind": "prepare", "case": {...}, "warmup_s": s}  support check, prepare, one checked call,
                                                     warm-up; answers the check and per_call_s
  {"kind": "samples", "n": n, "calls_per_sample": c} one untimed call, then n timed blocks
  {"kind": "finish"}                                 kernel and memory passes, then release
  {"kind": "release"}                                drop the prepared case
  {"kind": "stop"}                                   exit

`python -m harness.ab_worker --env THREADS SUITE` prints this interpreter's env.json instead.
"""
from __future__ import annotations

import gc
import json
import os
import signal
import sys
import time
import traceback

PROTOCOL = 1


class Session:
    """The prepared case of this worker, if any, and the requests that use it."""

    def __init__(self):
        self.case = self.adapter = self.prepared = None

    def release(self) -> dict:
        if self.prepared is not None:
            try:
                self.prepared.close()
            finally:
                self.case = self.adapter = self.prepared = None
        return {"released": True}

    def _failed(self, exc: BaseException) -> dict:
        from harness.execute import classify_exception

        traceback.print_exc()
        self.release()
        return classify_exception(exc)

    def prepare(self, message: dict) -> dict:
        from harness import registry
        from harness.execute import check_output, problem, tolerance_for
        from harness.spec import Case

        self.release()
        case = Case.from_dict(message["case"])
        print(f"--- prepare {case.case_id}", flush=True)
        try:
            adapter = registry.get(case.impl)
        except KeyError:
            return {"status": "unsupported", "reason": f"{case.impl} is not registered on this "
                                                       "side (plugin or package missing)"}
        reasons = adapter.unsupported(case)
        if reasons:
            return {"status": "unsupported", "reason": "; ".join(reasons)}
        try:
            inputs, ref = problem(case)
            tol = tolerance_for(case, inputs, ref)
            self.case, self.adapter = case, adapter
            self.prepared = prepared = adapter.prepare(case, inputs)
            out = prepared.call()
            prepared.sync()
            result = check_output(case, prepared, out, ref, tol)
            del out
            clock, start, calls = time.perf_counter_ns, time.perf_counter_ns(), 0
            while calls < 2 or clock() - start < message.get("warmup_s", 0.1) * 1e9:
                prepared.call()
                prepared.sync()
                calls += 1
            result.update(per_call_s=(clock() - start) / 1e9 / calls, warmup_calls=calls)
            return result
        except Exception as exc:  # the case's failure, not the worker's
            return self._failed(exc)

    def samples(self, message: dict) -> dict:
        """`n` samples of `calls_per_sample` calls each, after one untimed call: the side that
        just got the machine back is not measured cold. GC paused, as in harness.timing."""
        call, sync = self.prepared.call, self.prepared.sync
        cps, clock = int(message["calls_per_sample"]), time.perf_counter_ns
        out = []
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            call()
            sync()
            for _ in range(int(message["n"])):
                t0 = clock()
                for _ in range(cps):
                    call()
                sync()
                out.append((clock() - t0) / 1e9 / cps)
        except Exception as exc:
            return self._failed(exc)
        finally:
            if was_enabled:
                gc.enable()
        return {"samples_s": out}

    def finish(self) -> dict:
        from harness.execute import kernel_pass, memory_pass

        try:
            result = kernel_pass(self.adapter, self.prepared)
            result.update(memory_pass(self.adapter, self.case, self.prepared))
        except Exception as exc:
            return self._failed(exc)
        self.release()
        return result

    def handle(self, message: dict) -> dict:
        kind = message.get("kind")
        if kind == "prepare":
            return self.prepare(message)
        if kind in ("samples", "finish") and self.prepared is None:
            return {"status": "error", "reason": f"A/B worker: {kind} without a prepared case"}
        if kind == "samples":
            return self.samples(message)
        if kind == "finish":
            return self.finish()
        if kind == "release":
            return self.release()
        return {"status": "error", "reason": f"A/B worker: unknown request {kind!r}"}


def _json_default(value):
    return value.item() if hasattr(value, "item") else str(value)


def serve(family: str, threads: int, log_path: str) -> None:
    from harness.worker import _die_with_parent, set_threads

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the orchestrator decides what Ctrl-C means
    _die_with_parent()
    answers = os.fdopen(os.dup(1), "w", buffering=1)  # the protocol keeps the real stdout
    log = open(log_path or os.devnull, "a", buffering=1)
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    sys.stdout = sys.stderr = log

    def send(obj):
        answers.write(json.dumps(obj, default=_json_default) + "\n")
        answers.flush()

    info = set_threads(family, threads)
    info.update(protocol=PROTOCOL, executable=sys.executable,
                root=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    send({"ready": True, "info": info})
    session = Session()
    for line in sys.stdin:
        if not line.strip():
            continue
        message = json.loads(line)
        if message.get("kind") == "stop":
            break
        try:
            answer = session.handle(message)
        except Exception as exc:  # a bug here must still answer, or the orchestrator waits
            traceback.print_exc()
            answer = {"status": "error", "reason": f"A/B worker: {type(exc).__name__}: {exc}"}
        send(answer)
    session.release()


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--env":
        from harness.store import capture_env

        env = capture_env(int(argv[1]), argv[2], argv[3:])
        env["executable"] = sys.executable
        print(json.dumps(env, default=str))
        return 0
    family, threads, log_path = argv
    serve(family, int(threads), log_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
