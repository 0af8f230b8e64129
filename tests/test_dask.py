"""The Dask executor on a LocalCluster of two workers on 127.0.0.1 (worker 0 advertising GPU=1):
the same records as a local run, workers lost mid-case, GPU placement, Ctrl-C and resume across
executors, bad options, and `compare` matching cases only within one machine's fingerprint; and
the cluster commands the docs give, started on 127.0.0.1, listening there only."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from itertools import pairwise
from pathlib import Path

import pytest

from harness import registry
from harness.analysis import compare
from harness.cli import main
from harness.run.executor import LocalExecutor
from harness.run.runner import Runner
from harness.spec import Case, TimingSettings
from harness.store import RunDir, capture_env, load_records, read_plan
from tests.plugins import faulty, fleet

distributed = pytest.importorskip("distributed")
from harness.run.dask_executor import DaskExecutor, local_cluster

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = {"ATTNBENCH_PLUGINS": "tests.plugins.faulty,tests.plugins.fleet"}
QUICK = TimingSettings(warmup_s=0.002, min_samples=3, max_samples=10, budget_s=0.01,
                       timeout_s=60)
# long enough that a case is surely in flight when its worker is killed
SLOW = TimingSettings(warmup_s=0.01, min_samples=5, target_ci=1e-6, budget_s=0.3, timeout_s=60)


@pytest.fixture(scope="module")
def cluster():
    """Two workers, worker 0 with a (pretended) GPU; the plugins importable in every process."""
    saved = os.environ.get("ATTNBENCH_PLUGINS")
    os.environ.update(PLUGINS)
    if str(ROOT) not in sys.path:  # spawned workers import tests.plugins from here
        sys.path.insert(0, str(ROOT))
    cl = local_cluster(2, gpu_ids=["0"])
    client = distributed.Client(cl, set_as_default=False)
    client.wait_for_workers(2, timeout=120)
    yield cl, client
    client.close()
    cl.close()
    if saved is None:
        os.environ.pop("ATTNBENCH_PLUGINS", None)
    else:
        os.environ["ATTNBENCH_PLUGINS"] = saved


@pytest.fixture
def plugins(monkeypatch):
    """The test adapters in this process's registry, for this test only."""
    extra = {a.name: a for a in [*faulty.ADAPTERS, *fleet.ADAPTERS]}
    known = {**registry.adapters(), **extra}
    monkeypatch.setattr(registry, "adapters", lambda: dict(known))
    monkeypatch.setattr(registry, "get", lambda name: known[name])
    monkeypatch.setenv("ATTNBENCH_PLUGINS", PLUGINS["ATTNBENCH_PLUGINS"])


def ready(client):
    client.wait_for_workers(2, timeout=120)  # a worker killed by an earlier test is back
    return DaskExecutor(client, owns_client=False)


def run_here(path, cases, executor, settings=QUICK, **callbacks) -> list[dict]:
    run_dir = RunDir(path)
    run_dir.path.mkdir(parents=True)
    Runner(run_dir, settings, 1, executor=executor, **callbacks).run(cases)
    return load_records(path)


def kernel(impl, seq_len, causal=False, device="cpu"):
    return Case(impl=impl, seq_len=seq_len, seq_len_kv=seq_len, heads=2, head_dim=8,
                causal=causal, device=device)


def when(record) -> tuple[float, float]:
    start = datetime.fromisoformat(record["started_at"]).timestamp()
    return start, start + record["wall_s"]


def test_the_cluster_listens_on_loopback_only(cluster):
    psutil = pytest.importorskip("psutil")
    _, client = cluster
    pids = [os.getpid(), *client.run(os.getpid).values()]
    listening = [(pid, c.laddr.ip) for pid in pids
                 for c in psutil.Process(pid).net_connections("inet") if c.status == "LISTEN"]
    assert len(listening) >= 4  # scheduler, nannies, workers
    assert {ip for _, ip in listening} == {"127.0.0.1"}
    resources = {w["name"]: w["resources"] for w in client.scheduler_info()["workers"].values()}
    assert resources == {0: {"GPU": 1}, 1: {}}


DOCS = (ROOT / "docs" / "dask.md", ROOT / "README.md")


def documented_cluster_commands() -> tuple[str, str]:
    """The `dask scheduler` and `dask worker` command lines of the docs' cluster example
    (docs/dask.md, else README's "Spreading a run" section), continuation lines joined."""
    for path in DOCS:
        if not path.exists():
            continue
        text = path.read_text()
        if path.name == "README.md":
            text = text.partition("## Spreading a run")[2].split("\n## ")[0]
        for block in re.findall(r"```(?:bash|sh)\n(.*?)```", text, re.DOTALL):
            lines = [line.strip() for line in block.replace("\\\n", " ").splitlines()]
            scheduler = [line for line in lines if "dask scheduler" in line]
            worker = [line.rstrip("& ") for line in lines if "dask worker" in line]
            if scheduler and worker:
                return scheduler[0], worker[0]
    pytest.fail("no `dask scheduler` and `dask worker` commands in docs/dask.md or README.md")


def on_loopback(command: str, port: int) -> str:
    """A documented command moved onto this machine: every host 127.0.0.1, the scheduler's
    port `port`, each dashboard on a port the system picks."""
    found = re.search(r"--port[ =](\d+)|tcp://[^:\s]+:(\d+)", command)
    assert found, f"no scheduler port in the documented command {command!r}"
    command = re.sub(rf"(--port[ =]|tcp://[^:\s]+:){found[1] or found[2]}\b", rf"\g<1>{port}",
                     command)
    command = re.sub(r"\b\d{1,3}(?:\.\d{1,3}){3}\b", "127.0.0.1", command)
    return re.sub(r"(--dashboard-address[ =]\S*?):\d+", r"\1:0", command)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(process) -> set[tuple[str, int]]:
    """(address, port) of every listening socket of `process` and its descendants."""
    psutil = pytest.importorskip("psutil")
    found = set()
    for p in [process, *process.children(recursive=True)]:
        try:
            found |= {(c.laddr.ip, c.laddr.port) for c in p.net_connections("inet")
                      if c.status == psutil.CONN_LISTEN}
        except psutil.NoSuchProcess:
            pass
    return found


def test_the_documented_cluster_commands_listen_on_the_host_they_name(tmp_path, run_cli,
                                                                      monkeypatch):
    psutil = pytest.importorskip("psutil")
    monkeypatch.delenv("ATTNBENCH_PLUGINS", raising=False)  # the other tests' adapters
    port = free_port()
    scheduler_line, worker_line = (on_loopback(c, port) for c in documented_cluster_commands())
    assert f"--port {port}" in scheduler_line and f"tcp://127.0.0.1:{port}" in worker_line
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    started = []
    try:
        for line in (scheduler_line, worker_line):
            started.append(subprocess.Popen(["bash", "-c", f"i=0; {line}"], cwd=ROOT, env=env,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                            start_new_session=True))
        with distributed.Client(f"tcp://127.0.0.1:{port}", timeout=60,
                                set_as_default=False) as client:
            client.wait_for_workers(1, timeout=120)
        out = tmp_path / "run"
        result = run_cli("run", "smoke", "--impl", "numpy", "--threads", "1", "--no-report",
                         "--out", out, "--executor", "dask", "--scheduler",
                         f"tcp://127.0.0.1:{port}")
        assert result.returncode == 0, result.stdout + result.stderr
        records = load_records(out)
        assert len(records) == 4 and {r["status"] for r in records} == {"ok"}
        assert {r["executor_worker"] for r in records} == {f"{socket.gethostname()}-gpu0"}
        sockets = {p.pid: listening(psutil.Process(p.pid)) for p in started}
        scheduler, worker = sockets.values()
        assert len(scheduler) >= 2 and len(worker) >= 2, sockets  # protocol and HTTP each
        assert {ip for found in sockets.values() for ip, _ in found} == {"127.0.0.1"}, sockets
    finally:
        for process in reversed(started):
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)


def test_a_dask_run_of_smoke_matches_a_local_run(tmp_path, run_cli, plugins):
    # the smoke suite's NumPy cases (both seq_lens, full and causal): one record per case, and
    # the ids and statuses of a local run of the same plan
    out = tmp_path / "dask"
    result = run_cli("run", "smoke", "--impl", "numpy", "--threads", "1", "--no-report",
                     "--out", out, "--executor", "dask", "--workers", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    records = load_records(out)
    planned = read_plan(out).cases
    local = run_here(tmp_path / "local", list(planned), LocalExecutor())
    ids = [r["case_id"] for r in records]
    assert len(ids) == len(set(ids)) == len(planned) == 4
    assert {r["case_id"]: r["status"] for r in records} == \
        {r["case_id"]: r["status"] for r in local}
    assert all(r["host"] and r["executor_worker"] in ("0", "1") for r in records)
    assert all(r["host"] and r["executor_worker"] is None for r in local)
    env = json.loads((out / "env.json").read_text())
    (host,) = env["hosts"]
    assert env["hosts"][host]["fingerprint"] == env["fingerprint"]
    assert env["executors"][0]["name"] == "dask" and env["executors"][0]["local_cluster"]
    assert "matmul_tflops" in env["peaks"]["cpu"]
    logs = {p.name for p in (out / "logs").iterdir()}
    assert logs & {"worker-torch-0.log", "worker-torch-1.log"}  # the peaks, on either worker


def test_failures_are_contained_alike_on_dask_and_locally(tmp_path, cluster, plugins):
    # a mismatch, an exception, a memory error and a crashed worker process: each costs its
    # case, on a Dask worker as in a local run
    _, client = cluster
    cases = [kernel(impl, 16) for impl in ("numpy", "fault.unscaled", "fault.raises",
                                           "fault.nomemory", "fault.crashes")]
    on_dask = run_here(tmp_path / "dask", cases, ready(client))
    local = run_here(tmp_path / "local", cases, LocalExecutor())
    status = {r["impl"]: r["status"] for r in on_dask}
    assert status == {r["impl"]: r["status"] for r in local} == {
        "numpy": "ok", "fault.unscaled": "mismatch", "fault.raises": "error",
        "fault.nomemory": "oom", "fault.crashes": "error"}
    assert "SIGABRT" in next(r["reason"] for r in on_dask if r["impl"] == "fault.crashes")


def test_a_killed_dask_worker_costs_no_case(tmp_path, cluster, plugins):
    _, client = cluster
    executor = ready(client)
    pids = client.run(os.getpid)
    cases = [kernel("numpy", n) for n in (8, 16, 24, 32, 40)]
    killed = {}

    def kill_one_mid_case():
        deadline = time.time() + 60
        while time.time() < deadline and not killed:
            for address, keys in client.processing().items():
                if keys and address in pids:
                    os.kill(pids[address], signal.SIGKILL)
                    killed.update(at=time.time(), case_id=keys[0].split("@")[0])
                    return
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_one_mid_case)
    watcher.start()
    records = run_here(tmp_path / "run", cases, executor, SLOW)
    watcher.join()
    assert killed, "no case was in flight to kill"
    assert sorted(r["case_id"] for r in records) == sorted(c.case_id for c in cases)
    assert {r["status"] for r in records} == {"ok"}
    victim = next(r for r in records if r["case_id"] == killed["case_id"])
    start, end = when(victim)
    assert not start < killed["at"] < end  # its record is not the measurement that was killed


def test_a_case_that_kills_every_worker_is_an_error_and_the_run_goes_on(tmp_path, cluster,
                                                                        plugins):
    _, client = cluster
    cases = [kernel("fleet.kills_its_worker", 16), kernel("numpy", 16), kernel("numpy", 32)]
    records = {r["impl"] + str(r["seq_len"]): r
               for r in run_here(tmp_path / "run", cases, ready(client))}
    lost = records["fleet.kills_its_worker16"]
    assert lost["status"] == "error"
    assert "Dask worker running it died, 2 times" in lost["reason"]
    assert records["numpy16"]["status"] == records["numpy32"]["status"] == "ok"


def test_gpu_cases_run_one_at_a_time_on_gpu_workers_only(tmp_path, cluster, plugins):
    _, client = cluster
    gpu = [kernel("fleet.fake_gpu", n, causal, "cuda") for n in (16, 32) for causal in
           (False, True)]
    cpu = [kernel("numpy", n) for n in (16, 32)]
    records = run_here(tmp_path / "run", gpu + cpu, ready(client))
    assert sorted(r["case_id"] for r in records) == sorted(c.case_id for c in gpu + cpu)
    assert {r["status"] for r in records} == {"ok"}
    on_gpu = [r for r in records if r["device"] == "cuda"]
    assert {r["executor_worker"] for r in on_gpu} == {"0"}  # the only worker with a GPU
    for worker in ("0", "1"):  # no two cases overlap on one worker, GPU or not
        spans = sorted(when(r) for r in records if r["executor_worker"] == worker)
        for (_, end), (start, _) in pairwise(spans):
            assert start >= end - 1e-4  # wall_s is rounded to 0.1 ms


def test_ctrl_c_leaves_a_run_that_the_local_executor_resumes(tmp_path, cluster, run_cli):
    cl, _ = cluster
    suite = tmp_path / "s.toml"
    suite.write_text('[sweep]\nimpls = ["numpy"]\nseq_len = [8, 16, 24, 32, 40]\nheads = 2\n'
                     'head_dim = 8\n[timing]\nwarmup_s = 0.01\nmin_samples = 5\n'
                     'target_ci = 0.000001\nbudget_s = 0.3\n')
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(suite), "--out",
                             str(out), "--threads", "1", "--no-report", "--executor", "dask",
                             "--scheduler", cl.scheduler_address], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (
            (out / "results.jsonl").exists() and
            (out / "results.jsonl").read_text().count("\n") >= 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stdout + stderr
    assert "--resume" in stdout
    partial = [r["case_id"] for r in load_records(out)]
    assert 2 <= len(partial) < 5
    resumed = run_cli("run", suite, "--out", out, "--resume", "--no-report")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    final = [r["case_id"] for r in load_records(out)]
    assert len(final) == len(set(final)) == 5 and final[:len(partial)] == partial
    env = json.loads((out / "env.json").read_text())
    assert [e["name"] for e in env["executors"]] == ["dask", "local"]


@pytest.mark.parametrize("args, message", [
    (["--executor", "ray"], "--executor: expected one of local, dask, got 'ray'"),
    (["--workers", "0", "--executor", "dask"], "--workers: expected a positive integer"),
    (["--workers", "2"], "--workers: only with --executor dask"),
    (["--executor", "dask"], "expected either --workers N"),
    (["--executor", "dask", "--workers", "2", "--scheduler", "tcp://127.0.0.1:9"],
     "not both"),
    (["--executor", "dask", "--scheduler", "127.0.0.1:8786"],
     "--scheduler: expected a Dask scheduler address tcp://HOST:PORT"),
    (["--executor", "dask", "--scheduler", "tcp://127.0.0.1:70000"], "tcp://HOST:PORT"),
    (["--executor", "dask", "--scheduler", "tcp://127.0.0.1:9"],
     "nothing answers at tcp://127.0.0.1:9"),
])
def test_bad_executor_options_are_one_line_and_exit_2(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    assert main(["run", "smoke", "--impl", "numpy", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()  # refused before anything was written


def write_spread_run(path, placed: dict[str, str], hosts: dict[str, dict]):
    """A run whose cases ran on several hosts: placed = case impl -> host."""
    path.mkdir()
    records = [{"case_id": f"{impl}/k", "impl": impl, "status": "ok", "device": "cpu",
                "median_s": 1e-3, "samples_s": [1e-3, 1.1e-3, 0.9e-3] * 5, "host": host}
               for impl, host in placed.items()]
    (path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    env = {**capture_env(2, "spread", []), "hosts": hosts}
    (path / "env.json").write_text(json.dumps(env))
    return path


def test_compare_matches_cases_only_within_one_fingerprint(tmp_path):
    here = capture_env(2, "x", [])
    other = {**here, "packages": {**here["packages"], "torch": "9.9.9"}}
    hosts = {"a": here, "b": other}
    base = write_spread_run(tmp_path / "base", {"numpy": "a", "torch.naive": "a"}, hosts)
    new = write_spread_run(tmp_path / "new", {"numpy": "a", "torch.naive": "b"}, hosts)
    result = compare.compare_runs(base, new)
    verdicts = {row["impl"]: row["verdict"] for row in result["cases"]}
    assert verdicts["torch.naive"] == "other_machine" and verdicts["numpy"] != "other_machine"
    assert result["matched"] == 1 and not any(row["failing"] for row in result["cases"])
    assert "9.9.9" in next(r["reason"] for r in result["cases"] if r["impl"] == "torch.naive")
    apart = write_spread_run(tmp_path / "apart", {"numpy": "b", "torch.naive": "b"}, hosts)
    with pytest.raises(compare.CompareError, match="not comparable"):
        compare.compare_runs(base, apart)
    forced = compare.compare_runs(base, apart, force=True)
    assert forced["matched"] == 2 and forced["forced"]
