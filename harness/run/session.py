"""A run measuring into its started run directory (harness.store.RunDir.start): the runner
wired so that what workers, hosts and executors report is noted in env.json as it happens, the
machine's peaks measured once per run (before its first case), and an interrupted run's
outstanding cases cancelled, with what is recorded kept."""
from __future__ import annotations

from harness.run.executor import Executor
from harness.run.runner import Runner
from harness.spec import Case
from harness.store import Plan, RunDir


def measure_plan(run_dir: RunDir, plan: Plan, cases: list[Case], earlier: dict[str, dict],
                 executor: Executor | None, progress) -> None:
    """Measure `cases` (the plan's, less what is finished) into `run_dir`; `earlier` holds the
    records a resumed run has of them. `progress` is told of each case as it starts
    (`start(case)`) and ends (`record(record)`), given notes (`note(text)`), and entered while
    the cases run. KeyboardInterrupt propagates once the executor's processes are ended."""
    env = run_dir.env
    runner = Runner(run_dir, plan.timing, plan.overrides["threads"],
                    mem_limit=plan.overrides.get("mem_limit_bytes"), peaks=env.get("peaks"),
                    on_start=progress.start, on_record=progress.record,
                    on_worker=lambda family, info: run_dir.note_env(workers={family: info}),
                    executor=executor, hosts=env.get("hosts"),
                    on_host=lambda host, entry: run_dir.note_env(hosts={host: entry}))
    if executor and executor.name != "local":
        where = env["executors"][-1]
        progress.note(f"executor {executor.name}: {len(where.get('workers', {}))} workers at "
                      f"{where.get('scheduler')}")
    try:
        if "peaks" not in env and cases:
            progress.note("measuring this machine's matmul and bandwidth peaks")
            peaks = runner.measure_peaks(cases)
            if "error" in peaks:  # the worker died: no figures; a resumed run tries again
                progress.note(f"peaks not measured: {peaks['error']}")
                run_dir.note_env(peaks_error=peaks["error"])
            else:
                run_dir.note_env(peaks=peaks)
        with progress:
            runner.run(cases, earlier={c.case_id: earlier[c.case_id] for c in cases
                                       if c.case_id in earlier})
    except KeyboardInterrupt:
        runner.close(abandon=True)  # outstanding cases cancelled; what is recorded stays
        raise
    finally:
        runner.close()
