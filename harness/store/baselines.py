"""Baselines: reference runs committed under results/baselines/<name>/.

A baseline is a run directory (results.jsonl with the raw samples, env.json with the
fingerprint, suite.toml) plus baseline.json saying where and when it was saved. The gate
compares a new run with one: `attnbench compare --baseline NAME NEW_RUN`. A baseline belongs to
one machine and software stack; the fingerprint check refuses it elsewhere.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from harness.store import fingerprint, load_env, load_records, now_iso
from harness.store.rundir import RESULTS_ROOT, require_run_dir, write_json
from harness.values import NAME_KIND, BadValue

BASELINES_DIR = RESULTS_ROOT / "baselines"
FILES = ("results.jsonl", "env.json", "suite.toml", "scaling.json", "report.md")


class BaselineError(ValueError):
    """A baseline that cannot be saved or found; str() is one line."""


def _check_name(name: str) -> None:
    try:
        NAME_KIND.check(name, "baseline name")
    except BadValue as exc:
        raise BaselineError(f"{exc} (e.g. ci-h100)") from None


def path_of(name: str, root: str | Path = BASELINES_DIR) -> Path:
    """The directory of an existing baseline, or BaselineError naming the ones there are."""
    _check_name(name)
    path = Path(root) / name
    if not (path / "results.jsonl").is_file():
        known = ", ".join(names(root)) or "none"
        raise BaselineError(f"no baseline {name!r} in {root}/ (baselines there: {known}); "
                            "save one with: attnbench baseline save RUN_DIR NAME")
    return path


def names(root: str | Path = BASELINES_DIR) -> list[str]:
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "results.jsonl").is_file())


def save(run_dir: str | Path, name: str, root: str | Path = BASELINES_DIR,
         replace: bool = False) -> Path:
    """Copy a run's files into root/name; refuse to overwrite unless `replace` (BaselineError),
    or a run_dir that is not one (NotARunDir)."""
    _check_name(name)
    run_dir = require_run_dir(run_dir)
    records = load_records(run_dir)
    if not any(r.get("status") == "ok" for r in records):
        raise BaselineError(f"{run_dir}: no case ran ok: nothing to compare against")
    target = Path(root) / name
    if target.exists():
        if not replace:
            raise BaselineError(f"baseline {name!r} exists in {root}/: pass --force to replace it")
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for file in FILES:
        if (run_dir / file).is_file():
            shutil.copyfile(run_dir / file, target / file)
    env = load_env(run_dir)
    meta = {"name": name, "saved_at": now_iso(), "source": str(run_dir.resolve()),
            "cases": len(records), "ok": sum(r.get("status") == "ok" for r in records),
            "git": env.get("git"), "fingerprint": fingerprint(env)}
    write_json(target / "baseline.json", meta, indent=2)
    return target


def describe(name: str, root: str | Path = BASELINES_DIR) -> str:
    meta_path = Path(root) / name / "baseline.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    fp = meta.get("fingerprint") or fingerprint(load_env(Path(root) / name))
    where = fp.get("gpus") or fp.get("cpu")
    return (f"{name}: {meta.get('ok', '?')} ok of {meta.get('cases', '?')} cases, saved "
            f"{meta.get('saved_at', '?')}, {where}, torch {fp.get('torch')}")
