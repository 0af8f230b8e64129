"""What `attnbench` shows on the console: the end of a run leads with the answer (the recommend
logic per measured shape) and keeps the full tables for the report or --verbose; the progress
counter counts cases, with re-measurements shown as such; NO_COLOR; --version; Ctrl-C."""
from __future__ import annotations

import numpy as np
import pytest

from harness import cli
from harness.cli import listing
from harness.cli.console import plain_console, styled
from harness.cli.display import RunDisplay
from harness.report.finish import Finished


def rec(impl, n=128, causal=False, median=1e-3, status="ok", seed=0, started="t0", **extra):
    """A record of a 1x8xNx64 float32 CPU problem whose samples scatter by 1% around `median`."""
    r = dict(impl=impl, level="kernel", mode="fwd", device="cpu", dtype="float32", batch=1,
             heads=8, seq_len=n, seq_len_kv=n, head_dim=64, causal=causal, padding=0.0, seed=0,
             status=status, reason="" if status == "ok" else f"{impl} said no",
             case_id=f"{impl}/{n}/{causal}", started_at=started)
    if status == "ok":
        samples = median * np.exp(np.random.default_rng(seed).normal(0, 0.01, 40))
        r.update(median_s=float(np.median(samples)), samples_s=[float(s) for s in samples],
                 stable=True, peak_mem_bytes=1 << 20)
    r.update(extra)
    return r


def suite_records() -> list[dict]:
    """Two configurations x two lengths: `fast` wins by 2x except at N=256, where `twin` ties
    it; `broken` disagrees with the reference; `absent` is not installed."""
    out = []
    for causal in (False, True):
        for n in (128, 256):
            scale = n / 128
            out += [rec("fast", n, causal, 1e-3 * scale, seed=1),
                    rec("slow", n, causal, 2e-3 * scale, seed=2),
                    rec("broken", n, causal, status="mismatch"),
                    rec("absent", n, causal, status="unsupported")]
            if n == 256:
                out.append(rec("twin", n, causal, 1.001e-3 * scale, seed=3))
    return out


def end_of_run(capsys, verbose=False) -> str:
    records = suite_records()
    RunDisplay(len(records)).summary(Finished(records, reports=[]), "/tmp/run", verbose=verbose)
    return capsys.readouterr().out


def test_the_end_of_a_run_leads_with_the_fastest_agreeing_implementation_per_shape(capsys):
    out = end_of_run(capsys)
    lines = out.splitlines()
    answer = [line for line in lines if "│" in line and ("fast" in line or "twin" in line)]
    assert len(answer) == 4  # one row per measured shape
    assert "float32 full" in out and "float32 causal" in out
    at_128 = [line for line in answer if " 128 " in line]
    assert all("fast" in line and "2.00x slow" in line and "yes" in line for line in at_128)
    at_256 = [line for line in answer if " 256 " in line]
    assert all("no: tied with" in line for line in at_256)
    assert "broken" not in "".join(answer)  # it disagreed with float64: never the answer
    assert sum(line.startswith("MISMATCH broken/") for line in lines) == 4
    assert "not run: absent: absent said no" in out
    assert "median latency" not in out and "--verbose" in out
    assert lines[-1] == "run directory: /tmp/run"


def test_verbose_adds_the_full_tables_before_the_answer(capsys):
    out = end_of_run(capsys, verbose=True)
    assert "median latency (ms)" in out
    assert out.index("median latency") < out.index("the answer")
    assert "--verbose" not in out


def test_a_run_where_nothing_agrees_says_so(capsys):
    records = [rec("broken", status="mismatch"), rec("other", status="error")]
    RunDisplay(2).summary(Finished(records), "/tmp/run")
    assert "none qualifies" in capsys.readouterr().out


def counters(capsys, display: RunDisplay, records: list[dict]) -> list[str]:
    for r in records:
        display.record(r)
    return [line.split("]")[0] + "]" for line in capsys.readouterr().out.splitlines()]


def test_the_counter_counts_cases_and_shows_a_re_measurement_as_one(capsys):
    a, b, c = rec("a"), rec("b"), rec("c")
    again = rec("b", started="t1", remeasured=1)
    marked = {**again, "stable": False, "instability": "implausible"}  # nothing measured
    shown = counters(capsys, RunDisplay(3), [a, b, c, again, marked])
    assert shown == ["[   1/3]", "[   2/3]", "[   3/3]", "[re-measure 1/2]", "[final]"]


def test_with_repeats_the_counter_counts_cases_per_pass(capsys):
    first = [rec("a"), rec("b")]
    second = [rec(x, started="t1", repeat_medians_s=[1e-3, 1e-3]) for x in ("a", "b")]
    shown = counters(capsys, RunDisplay(2, repeats=2), [*first, *second])
    assert shown == ["[   1/2 repeat 1/2]", "[   2/2 repeat 1/2]", "[   1/2 repeat 2/2]",
                     "[   2/2 repeat 2/2]"]


def test_a_resumed_run_counts_on_from_the_cases_it_has(capsys):
    display = RunDisplay(3, earlier={"a/128/False": rec("a")})
    assert counters(capsys, display, [rec("b"), rec("c")]) == ["[   2/3]", "[   3/3]"]


@pytest.mark.parametrize("no_color", [True, False])
def test_no_color_is_honoured(monkeypatch, no_color):
    if no_color:
        monkeypatch.setenv("NO_COLOR", "1")
    else:
        monkeypatch.delenv("NO_COLOR", raising=False)
    console = plain_console(force_terminal=True)
    with console.capture() as captured:
        console.print(styled(("ok", "green"), " [not markup] :smile:"))
    text = captured.get()
    assert "[not markup] :smile:" in text
    assert ("\x1b[32m" in text) is not no_color


def test_version_prints_the_installed_version(capsys):
    from harness import __version__

    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"attnbench {__version__}"


def test_ctrl_c_in_any_command_is_one_line_and_exit_130(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(listing, "cmd_list", interrupted)
    assert cli.main(["list"]) == 130
    err = capsys.readouterr().err
    assert err == "interrupted\n"


def test_without_installed_metadata_the_version_is_the_package_s(monkeypatch):
    from importlib import metadata

    from harness import __version__
    from harness.cli.args import version

    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    assert version() == __version__
