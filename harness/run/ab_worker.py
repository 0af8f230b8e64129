"""One side of an A/B run: a worker process started with that side's Python interpreter.

`python -m harness.run.ab_worker FAMILY THREADS LOG` imports one framework family and answers
requests, one JSON object per line on stdin, one answer per line on stdout (the libraries' own
output goes to LOG). Unlike the run worker (harness.run.worker, a multiprocessing child of the
runner's interpreter), this one may run another interpreter (another virtualenv, another torch),
so it speaks plain JSON over pipes. It keeps one prepared case between requests, so the
orchestrator (harness.run.ab) can alternate blocks of samples between base and head:

  {"kind": "prepare", "case": {...}, "warmup_s": s}  support check, prepare, one checked call,
                                                     warm-up; answers the check and per_call_s
  {"kind": "samples", "n": n, "calls_per_sample": c} one untimed call, then n timed blocks
  {"kind": "finish"}                                 kernel and memory passes, then release
  {"kind": "peaks", "targets": [[device, dtype]]}    this side's matmul and bandwidth peaks
  {"kind": "release"}                                drop the prepared case
  {"kind": "stop"}                                   exit

`python -m harness.run.ab_worker --env THREADS SUITE` prints this interpreter's env.json instead.
"""
from __future__ import annotations

import json
import os
import sys
import traceback

PROTOCOL = 2


class Session:
    """The prepared case of this worker, if any, and the requests that use it."""

    def __init__(self):
        self.case = self.adapter = self.prepared = self.timer = None

    def release(self) -> dict:
        if self.prepared is not None:
            try:
                self.prepared.close()
            finally:
                self.case = self.adapter = self.prepared = self.timer = None
        return {"released": True}

    def _failed(self, exc: BaseException) -> dict:
        from harness.run.execute import classify_exception

        traceback.print_exc()
        self.release()
        return classify_exception(exc)

    def prepare(self, message: dict) -> dict:
        """Support check, prepare, the checked first call and the warm-up, as in a run."""
        from harness import registry
        from harness.problem.truth import problem, tolerance_for
        from harness.run.execute import checked_timer
        from harness.run.process import settle
        from harness.spec import Case, TimingSettings

        self.release()
        settle()
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
            inputs, _ = problem(case)
            tolerance_for(case)
            self.case, self.adapter = case, adapter
            self.prepared = adapter.prepare(case, inputs)
            settings = TimingSettings(warmup_s=message.get("warmup_s", TimingSettings.warmup_s),
                                      min_sample_s=message.get("min_sample_s",
                                                               TimingSettings.min_sample_s))
            self.timer, result = checked_timer(case, self.prepared, settings)
            self.timer.warm_up()
            result.update(per_call_s=self.timer.fastest_call_s,
                          warmup_calls=self.timer.warmup_calls,
                          timed_s=self.timer.timed_ns / 1e9)
            return result
        except Exception as exc:  # the case's failure, not the worker's
            return self._failed(exc)

    def samples(self, message: dict) -> dict:
        """`n` samples of `calls_per_sample` calls each, after one untimed call: the side that
        just got the machine back is not measured cold. The run's own sampling loop."""
        try:
            self.timer.calls_per_sample = int(message["calls_per_sample"])
            self.timer.take(1)
            return {"samples_s": self.timer.take(int(message["n"]))}
        except Exception as exc:
            return self._failed(exc)

    def finish(self) -> dict:
        from harness.measure.kernels import kernel_pass
        from harness.run.execute import memory_pass

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
        if kind == "peaks":
            from harness.measure.peaks import measure_peaks

            return measure_peaks([tuple(t) for t in message["targets"]])
        return {"status": "error", "reason": f"A/B worker: unknown request {kind!r}"}


def _json_default(value):
    return value.item() if hasattr(value, "item") else str(value)


def serve(family: str, threads: int, log_path: str) -> None:
    from harness.run.process import redirect_output, start_worker

    answers = os.fdopen(os.dup(1), "w", buffering=1)  # the protocol keeps the real stdout
    redirect_output(log_path)

    def send(obj):
        answers.write(json.dumps(obj, default=_json_default) + "\n")
        answers.flush()

    info = start_worker(family, threads)
    info.update(protocol=PROTOCOL, executable=sys.executable,
                root=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
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
