"""GitHub-flavoured Markdown summary of a run: what ran, the verdict, the latency table,
problems, and what did not run and why."""
from __future__ import annotations

import json
from pathlib import Path

from harness import summary
from harness.store import load_env, load_records


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if h.startswith("N=") else "---" for h in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _scaling(run_dir) -> list[str]:
    """Exponents and crossovers from scaling.json, when the run wrote one."""
    path = Path(run_dir) / "scaling.json"
    if not path.exists():
        return []
    from harness.scaling import format_fits

    data = json.loads(path.read_text())
    header, rows = format_fits([f for f in data["fits"] if f["exponent"] is not None])
    if not rows:
        return []
    out = [f"## Scaling: cost ∝ N^k over the largest {data['fit_points']} seq_lens", "",
           _table(header, rows), ""]
    out += [f"- {c['faster_above']} overtakes {c['faster_below']} near seq_len {c['seq_len']} "
            f"({c['metric']}, {c['dtype']}, {'causal' if c['causal'] else 'full'})"
            for c in data["crossovers"]]
    return out + ([""] if data["crossovers"] else [])


def render_markdown(run_dir: str | Path) -> str:
    records = load_records(run_dir)
    env = load_env(run_dir)
    counts = summary.status_counts(records)
    failed = summary.failures(records)
    git = env.get("git") or {}
    packages = env.get("packages") or {}
    versions = ", ".join(f"{k} {v}" for k, v in packages.items() if v)
    out = [f"# attnbench: {env.get('suite', Path(run_dir).name)}", ""]
    if not records:
        out.append("**No case was recorded in this run.**")
    elif failed:
        out.append(f"**{len(failed)} of {len(records)} cases failed** "
                   f"({', '.join(f'{n} {s}' for s, n in counts.items() if n and s != 'ok')}).")
    else:
        out.append(f"**All {counts['ok']} computed cases agree with the float64 reference** "
                   f"({counts['unsupported']} unsupported).")
    out += ["", f"- machine: {env.get('cpu', '?')}, {env.get('threads', '?')} threads"
            + (f", GPU {env['gpus'][0]['name']}" if env.get("gpus") else ""),
            f"- software: Python {env.get('python', '?')}; {versions}",
            f"- commit: {git.get('commit') or 'unknown'}{' (dirty)' if git.get('dirty') else ''}",
            f"- started: {env.get('started_at', '?')}", ""]
    header, rows = summary.latency_table(records)
    if rows:
        out += ["## Median latency (ms)", "", _table(header, rows), ""]
    scaling = _scaling(run_dir)
    if scaling:
        out += scaling
    if failed:
        out += ["## Problems", "", _table(["case", "status", "reason"],
                [[r["case_id"], r["status"], r["reason"].replace("|", "\\|")] for r in failed]), ""]
    skipped = summary.not_run(records)
    if skipped:
        out += ["## Not run on this machine", ""]
        out += [f"- `{impl}`: {reason}" for impl, reason in sorted(skipped.items())]
        out.append("")
    return "\n".join(out)
