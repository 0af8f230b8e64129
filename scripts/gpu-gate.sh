#!/usr/bin/env bash
# The GPU regression gate's shell steps (.github/workflows/gpu-regression.yml), one subcommand
# per step, so that a test can dry-run the judging steps on any machine with a made-up run
# directory (tests/test_workflows.py).
#
# usage: scripts/gpu-gate.sh COMMAND ARGS...
#   install VENV CHECKOUT EXTRAS  a virtualenv at VENV: the CUDA torch and the xformers built for
#                                 it in one resolver step, then CHECKOUT editable with EXTRAS
#                                 (e.g. xformers,dev), torch and xformers held where they are
#   mode REQUESTED EVENT TARGET BASE_DIR
#                                 which gate runs: REQUESTED (ab or baseline), else ab for a
#                                 pull_request and baseline otherwise; ab checks the TARGET branch
#                                 out in BASE_DIR (a git worktree) and falls back to baseline
#                                 when it has no A/B worker. Writes mode=... to GITHUB_OUTPUT.
#   run SUITE OUT                 `attnbench run SUITE --device cuda --out OUT`; cases that
#                                 failed do not stop the job here (exit 0): `judge` fails it
#   judge RUN                     fails on any failed case (mismatch, error, timeout, oom), on a
#                                 planned case without a record and on a run where nothing ran;
#                                 then compares RUN with the baseline, or stores RUN as the
#                                 baseline as STORE_BASELINE says (stored=true to GITHUB_OUTPUT)
#   ab SUITE OUT BASE_DIR BASE_PYTHON
#                                 `attnbench ab` against the checkout in BASE_DIR; fails on a
#                                 regression and on any failed case of the head side
#   export RUN FILE               RUN's ok cases as github-action-benchmark's customSmallerIsBetter
#   cleanup BASE_DIR [DIR...]     `git worktree remove --force BASE_DIR`, prune, remove each DIR
# Exit codes: 0 the step passed, 1 the gate fails, 2 a usage mistake (one line on stderr).
# Environment: ATTNBENCH_PYTHON (the interpreter with attnbench, default python); BASELINE (name
# under BASELINES_DIR, default ci-gpu); BASELINES_DIR (default results/baselines);
# STORE_BASELINE: never (default), missing (store RUN when there is no baseline yet: main) or
# always (replace it: a manual run asking for it); TORCH_VERSION, XFORMERS_VERSION, TORCH_INDEX
# and BOOTSTRAP_PYTHON (default python3) for install; GITHUB_STEP_SUMMARY and GITHUB_OUTPUT,
# the files GitHub reads (ignored when unset).
set -u

USAGE="usage: scripts/gpu-gate.sh install|mode|run|judge|ab|export|cleanup ARGS... (see its header)"
PY=${ATTNBENCH_PYTHON:-python}
BASELINE=${BASELINE:-ci-gpu}
BASELINES_DIR=${BASELINES_DIR:-results/baselines}
STORE_BASELINE=${STORE_BASELINE:-never}

refuse() {
    echo "gpu-gate: $*" >&2
    exit 2
}

args() {  # args COMMAND WANTED GIVEN: refuse a wrong number of arguments
    [ "$3" -eq "$2" ] || refuse "$1: expected $2 argument(s), got $3 ($USAGE)"
}

attnbench() {
    "$PY" -m harness.cli "$@"
}

summary() {  # stdin to the job summary and the log
    if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then tee -a "$GITHUB_STEP_SUMMARY"; else cat; fi
}

output() {  # output KEY VALUE: a step output
    if [ -n "${GITHUB_OUTPUT:-}" ]; then echo "$1=$2" >>"$GITHUB_OUTPUT"; fi
    echo "$1=$2"
}

# The run's verdict in Markdown, from the report's own verdict (harness.report.tables); exit 1
# unless every planned case has a record, some case ran and none failed.
check_cases() {
    "$PY" - "$1" <<'EOF' | summary
import sys

from harness.constants import FAILED_STATUSES
from harness.report.format import code_md, escape_md
from harness.report.run import load_run
from harness.report.tables import verdict

SHOWN = 20
run = load_run(sys.argv[1])
judged = verdict(run)
ok = judged["level"] == "ok" and not run.missing
icon = ":white_check_mark:" if ok else ":x:"
print(f"### {icon} Cases of {code_md(run.path)}: {escape_md(judged['headline'])}")
failed = [r for r in run.records if r["status"] in FAILED_STATUSES]
for r in failed[:SHOWN]:
    print(f"- {code_md(r['case_id'])}: {r['status']}: {escape_md(r['reason'] or '-')}")
if len(failed) > SHOWN:
    print(f"- and {len(failed) - SHOWN} more (see the report)")
for note in judged["notes"]:
    print(f"\n> {note}")
print()
sys.exit(0 if ok else 1)
EOF
    return "${PIPESTATUS[0]}"
}

cmd_install() {
    args install 3 $#
    local venv=$1 checkout=$2 extras=$3 python=${BOOTSTRAP_PYTHON:-python3}
    for name in TORCH_VERSION XFORMERS_VERSION TORCH_INDEX; do
        [ -n "${!name:-}" ] || refuse "install: set $name (the workflow's env says which)"
    done
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
        refuse "install: $python is older than Python 3.11, which attnbench needs (set BOOTSTRAP_PYTHON)"
    "$python" -m venv "$venv" || exit 1
    "$venv/bin/python" -m pip install --upgrade pip || exit 1
    # one resolver step: torch and the xformers built for it, from PyTorch's CUDA index
    "$venv/bin/python" -m pip install "torch==$TORCH_VERSION" "xformers==$XFORMERS_VERSION" \
        --index-url "$TORCH_INDEX" || exit 1
    # the project from the public index, unable to move either of them
    printf 'torch==%s\nxformers==%s\n' "$TORCH_VERSION" "$XFORMERS_VERSION" >"$venv/pins.txt"
    "$venv/bin/python" -m pip install -c "$venv/pins.txt" -e "${checkout}[$extras]" || exit 1
    "$venv/bin/python" -c 'import torch, xformers
assert torch.cuda.is_available(), "torch cannot see the GPU"
print("torch", torch.__version__, "CUDA", torch.version.cuda, torch.cuda.get_device_name(0),
      "xformers", xformers.__version__)' || exit 1
}

cmd_mode() {
    args mode 4 $#
    local mode=$1 event=$2 target=$3 base_dir=$4
    if [ -z "$mode" ]; then
        if [ "$event" = pull_request ]; then mode=ab; else mode=baseline; fi
    fi
    case $mode in
        ab | baseline) ;;
        *) refuse "mode: expected ab or baseline, got '$mode'" ;;
    esac
    if [ "$mode" = ab ]; then
        git worktree prune  # a job killed before its cleanup leaves a registration behind
        git worktree add --detach "$base_dir" "origin/$target" || exit 1
        if [ ! -f "$base_dir/harness/run/ab_worker.py" ]; then
            echo "::notice::$target has no A/B worker (harness/run/ab_worker.py): comparing with the baseline instead"
            mode=baseline
        fi
    fi
    output mode "$mode"
}

cmd_run() {
    args run 2 $#
    attnbench run "$1" --device cuda --out "$2"
    local code=$?
    if [ "$code" -eq 1 ]; then
        echo "gpu-gate: some cases failed; the judge step fails the job and lists them"
        code=0
    fi
    return "$code"
}

store_baseline() {  # store_baseline RUN: RUN as the baseline, said in the summary
    attnbench baseline save "$1" "$BASELINE" --baselines-dir "$BASELINES_DIR" --force || return 1
    output stored true
    summary <<EOF
## :floppy_disk: Stored as the baseline \`$BASELINE\`: not compared with anything

This run had no baseline to be judged against: it is stored as the baseline (the artifact
\`baseline-$BASELINE\`). Commit it under \`$BASELINES_DIR/$BASELINE/\` so that later runs are
compared with it; until then this gate checks only that every case agrees with the reference.
EOF
}

cmd_judge() {
    args judge 1 $#
    local run=$1 code=0 rc
    [ -f "$run/results.jsonl" ] || refuse "judge: $run is not a run directory (no results.jsonl)"
    case $STORE_BASELINE in
        never | missing | always) ;;
        *) refuse "judge: STORE_BASELINE must be never, missing or always, got '$STORE_BASELINE'" ;;
    esac
    check_cases "$run" || code=1
    if [ "$STORE_BASELINE" = always ] ||
        { [ "$STORE_BASELINE" = missing ] && [ ! -f "$BASELINES_DIR/$BASELINE/results.jsonl" ]; }; then
        if [ "$code" -ne 0 ]; then
            summary <<EOF
## :x: Not stored as the baseline \`$BASELINE\`: the run has failed cases

EOF
        else
            store_baseline "$run" || code=1
        fi
    elif [ -f "$BASELINES_DIR/$BASELINE/results.jsonl" ]; then
        attnbench compare --baseline "$BASELINE" --baselines-dir "$BASELINES_DIR" "$run" \
            --md "$run/compare.md"
        rc=$?
        if [ -f "$run/compare.md" ]; then summary <"$run/compare.md"; fi
        [ "$rc" -eq 0 ] || code=1
    else
        summary <<EOF
## :warning: Not compared: no baseline \`$BASELINE\` in \`$BASELINES_DIR/\`

Only the cases were checked. A run on main stores one (or run the workflow by hand with
save_baseline).
EOF
    fi
    return "$code"
}

cmd_ab() {
    args ab 4 $#
    local suite=$1 out=$2 base_dir=$3 base_python=$4 code
    attnbench ab "$suite" --device cuda --out "$out" --base-python "$base_python" \
        --base-root "$base_dir" --head-python "$(command -v "$PY")"
    code=$?
    if [ -f "$out/compare.md" ]; then summary <"$out/compare.md"; fi
    if [ -f "$out/head/results.jsonl" ]; then
        check_cases "$out/head" || code=$((code > 1 ? code : 1))
    fi
    return "$code"
}

cmd_export() {
    args export 2 $#
    attnbench export "$1" --format github-action-benchmark --out "$2"
}

cmd_cleanup() {
    [ $# -ge 1 ] || refuse "cleanup: expected BASE_DIR [DIR...] ($USAGE)"
    local base_dir=$1
    shift
    if [ -e "$base_dir" ]; then
        git worktree remove --force "$base_dir" ||
            echo "::warning::$base_dir could not be removed as a git worktree"
    fi
    git worktree prune
    for dir in "$@"; do rm -rf -- "$dir"; done
}

[ $# -ge 1 ] || refuse "missing COMMAND ($USAGE)"
command=$1
shift
case $command in
    install | mode | run | judge | ab | export | cleanup) "cmd_$command" "$@" ;;
    -h | --help) echo "$USAGE" ;;
    *) refuse "unknown command '$command' ($USAGE)" ;;
esac
