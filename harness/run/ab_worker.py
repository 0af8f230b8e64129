"""One side of an A/B run: a worker process started with that side's Python interpreter.

`python -m harness.run.ab_worker FAMILY THREADS LOG` imports one framework family and answers
requests, one JSON object per line on stdin, one answer per line on stdout (the libraries' own
output goes to LOG). Unlike the run worker (harness.run.worker, a multiprocessing child of the
runner's interpreter), this one may run another interpreter (another virtualenv, another torch),
so it speaks plain JSON over pipes. Each case takes the phases of a run
(harness.run.execute.CaseRun), the same memory cap, truth and `harness_s` included; this worker
only keeps the case between requests, so the orchestrator (harness.run.ab) can alternate blocks
of samples between base and head:

  {"kind": "prepare", "case": {...}, "settings": {...}, "mem_limit": bytes or null}
        support check, truth, prepare, the checked first call and warm-up (under the cap);
        answers the check, per_call_s, warmup_calls and timed_s
  {"kind": "samples", "n": n, "calls_per_sample": c}
        one untimed call, then n timed samples; answers samples_s and spent_s
  {"kind": "finish"}
        the kernel and memory passes (the cap lifted) and harness_s; the case is released
  {"kind": "peaks", "targets": [[device, dtype]]}
        this side's matmul and bandwidth peaks
  {"kind": "stop"}
        exit (no answer)

A case that fails answers its status (as a run's would) and is released.

`python -m harness.run.ab_worker --env THREADS SUITE` prints this interpreter's env.json instead.
"""
from __future__ import annotations

import json
import os
import sys
import traceback

PROTOCOL = 3


class Session:
    """The case this worker holds between requests, if any (a harness.run.execute.CaseRun)."""

    def __init__(self):
        self.run = None

    def release(self) -> None:
        run, self.run = self.run, None
        if run is not None:
            run.close()

    def _failed(self, exc: BaseException) -> dict:
        from harness.run.execute import classify_exception

        self.release()  # the memory cap lifted before anything else is allocated
        traceback.print_exc()
        return classify_exception(exc)

    def prepare(self, message: dict) -> dict:
        """The case's phases up to the samples: start, the checked call and the warm-up."""
        from harness import registry
        from harness.run.execute import CaseRun
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
        self.run = CaseRun(case, adapter, TimingSettings(**message.get("settings", {})),
                           message.get("mem_limit"))
        try:
            ended = self.run.start()
            if ended:
                self.release()
                return ended
            result = self.run.check()
            result.update(self.run.warm_up())
            return result
        except Exception as exc:  # the case's failure, not the worker's
            return self._failed(exc)

    def samples(self, message: dict) -> dict:
        """One block of samples: the run's own sampling loop."""
        try:
            return self.run.take(int(message["n"]), int(message["calls_per_sample"]))
        except Exception as exc:
            return self._failed(exc)

    def finish(self) -> dict:
        try:
            result = self.run.finish()
        except Exception as exc:
            return self._failed(exc)
        self.release()
        return result

    def handle(self, message: dict) -> dict:
        kind = message.get("kind")
        if kind == "prepare":
            return self.prepare(message)
        if kind in ("samples", "finish") and self.run is None:
            return {"status": "error", "reason": f"A/B worker: {kind} without a prepared case"}
        if kind == "samples":
            return self.samples(message)
        if kind == "finish":
            return self.finish()
        if kind == "peaks":
            from harness.measure.peaks import measure_peaks

            return measure_peaks([tuple(t) for t in message["targets"]])
        return {"status": "error", "reason": f"A/B worker: unknown request {kind!r}"}


def serve(family: str, threads: int, log_path: str) -> None:
    from harness.run.process import redirect_output, start_worker
    from harness.store import json_safe

    answers = os.fdopen(os.dup(1), "w", buffering=1)  # the protocol keeps the real stdout
    redirect_output(log_path)

    def send(obj):
        answers.write(json.dumps(json_safe(obj), allow_nan=False) + "\n")
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
