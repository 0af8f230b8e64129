#!/usr/bin/env bash
# Validate attnbench on one CUDA GPU in at most 10 minutes (an H100 or H200), writing
# everything under OUTDIR:
#   nvidia-smi.txt, nvidia-smi-q.txt  the GPU, its driver and its state
#   versions.json                     Python, torch (and its CUDA, cuDNN), triton, jax, ...
#   peaks.json                        the harness's matmul (fp32, fp16, bf16) and copy peaks
#   agreement.json                    the harness's median of torch.sdpa.flash (bf16, B4 H16
#                                     N4096 d128, fwd) against triton.testing.do_bench's, ratio
#   run/                              `attnbench run gpu`, narrowed to N 1024 and 2048
#   run-8192/                         `attnbench run gpu-8192`: each backend at N=8192, fwd
#   run-graphs/                       a few torch cases with --cuda-graphs
#   run-layers/                       `attnbench run gpu-layers` at N 1024
#   each run: results.jsonl, scaling.json (time and memory exponents), report.html, report.md
#   logs/STEP.log, steps.tsv, summary.txt
# The suites are narrowed to fit the time: the whole of suites/gpu.toml is 800 cases (its
# comment has the estimate). Each step has a time limit, and the steps together stay within TOTAL_S; a step
# that fails or runs out of time is logged, and the script goes on with the next one.
#
# usage: scripts/gpu-check.sh OUTDIR [--quick]
#   OUTDIR   a new or empty directory
#   --quick  smaller runs (bfloat16, full attention only), about 5 minutes
# Environment: PYTHON (default python3), the interpreter that has attnbench's dependencies.
set -u

USAGE="usage: scripts/gpu-check.sh OUTDIR [--quick]"
TOTAL_S=570  # every step together, leaving the summary and slack inside 10 minutes

refuse() {
    echo "gpu-check: $*" >&2
    exit 2
}

out="" quick=0
for arg in "$@"; do
    case "$arg" in
        --quick) quick=1 ;;
        -h | --help) echo "$USAGE"; exit 0 ;;
        -*) refuse "unknown option $arg ($USAGE)" ;;
        *) [ -z "$out" ] || refuse "one OUTDIR expected, got '$out' and '$arg' ($USAGE)"
           out=$arg ;;
    esac
done
[ -n "$out" ] || refuse "missing OUTDIR ($USAGE)"
if [ -e "$out" ] && [ ! -d "$out" ]; then
    refuse "$out exists and is not a directory: expected a new or empty directory"
fi
if [ -d "$out" ]; then
    shopt -s nullglob dotglob
    entries=("$out"/*)
    shopt -u nullglob dotglob
    [ "${#entries[@]}" -eq 0 ] || refuse "$out is not empty: expected a new or empty directory"
fi
PYTHON=${PYTHON:-python3}
command -v nvidia-smi >/dev/null 2>&1 || refuse "no CUDA device here: nvidia-smi not found"
command -v "$PYTHON" >/dev/null 2>&1 || refuse "no Python interpreter '$PYTHON' (set PYTHON)"
CUDA_CHECK='
import importlib
import sys
for name in ("array_api_compat", "numpy", "scipy", "pandas", "rich", "jinja2", "matplotlib"):
    try:
        importlib.import_module(name)
    except ImportError:
        sys.exit(f"attnbench needs the Python package {name!r} (install it, or carry its wheel)")
try:
    import torch
except Exception as exc:
    sys.exit(f"torch cannot be imported ({type(exc).__name__}: {exc})")
if not torch.cuda.is_available():
    sys.exit("no CUDA device here: torch.cuda.is_available() is false (a CPU build of torch, "
             "or no GPU visible)")
'
why=$("$PYTHON" -c "$CUDA_CHECK" 2>&1) || refuse "cannot run here: ${why##*$'\n'}"
command -v timeout >/dev/null 2>&1 || refuse "timeout (GNU coreutils) not found"

mkdir -p "$out/logs" || refuse "cannot create $out"
out=$(cd "$out" && pwd)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || refuse "cannot enter $ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
START=$SECONDS
FAILED=0
printf 'step\tstatus\tseconds\n' >"$out/steps.tsv"

# step NAME LIMIT_S RESERVE_S COMMAND...: run COMMAND for at most LIMIT_S seconds (less when
# the total budget, minus RESERVE_S kept for the steps after it, has less left), output in
# logs/NAME.log. Interrupted with SIGINT first, so a run keeps what it recorded.
step() {
    local name=$1 limit=$2 reserve=$3 left rc status t0
    shift 3
    left=$((TOTAL_S - (SECONDS - START) - reserve))
    if [ "$left" -lt "$limit" ]; then limit=$left; fi
    if [ "$limit" -lt 5 ]; then
        status="skipped: out of time"
        FAILED=1
    else
        echo "[gpu-check] $name (at most ${limit} s)"
        t0=$SECONDS
        timeout --signal=INT --kill-after=10 "$limit" "$@" >"$out/logs/$name.log" 2>&1
        rc=$?
        case $rc in
            0) status="ok" ;;
            124 | 137) status="timed out after ${limit} s (what it wrote is kept)"; FAILED=1 ;;
            1) status="exit code 1: cases that failed (a run: see its report) or a failed step (logs/$name.log)"
               FAILED=1 ;;
            *) status="failed with exit code $rc (see logs/$name.log)"; FAILED=1 ;;
        esac
    fi
    printf '%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - ${t0:-$SECONDS}))" >>"$out/steps.tsv"
    echo "[gpu-check] $name: $status"
}

attnbench() {
    "$PYTHON" -m harness.cli "$@"
}

if [ "$quick" -eq 1 ]; then
    narrow=(--dtype bfloat16 --causal false)
    run_s=120 graphs_s=45 layers_s=45
else
    narrow=()
    run_s=170 graphs_s=45 layers_s=60
fi
n8192_s=60
post_s=120  # kept for the scaling and report steps of the four runs

step nvidia-smi 15 "$post_s" \
    bash -c 'nvidia-smi >"$1/nvidia-smi.txt" && nvidia-smi -q >"$1/nvidia-smi-q.txt"' _ "$out"
step versions 30 "$post_s" "$PYTHON" scripts/gpu_check.py versions "$out/versions.json"
step peaks 45 "$post_s" "$PYTHON" scripts/gpu_check.py peaks "$out/peaks.json"
step agreement 75 "$post_s" "$PYTHON" scripts/gpu_check.py agreement "$out/agreement.json"
step run "$run_s" "$post_s" attnbench run gpu --out "$out/run" --no-report \
    --seq-len 1024,2048 ${narrow[@]+"${narrow[@]}"}
step run-8192 "$n8192_s" "$post_s" attnbench run gpu-8192 --out "$out/run-8192" --no-report \
    ${narrow[@]+"${narrow[@]}"}
step run-graphs "$graphs_s" "$post_s" attnbench run gpu --out "$out/run-graphs" --no-report \
    --cuda-graphs --impl torch.naive,torch.sdpa,torch.sdpa.flash --seq-len 1024 \
    --dtype bfloat16 --causal false
step run-layers "$layers_s" "$post_s" attnbench run gpu-layers --out "$out/run-layers" \
    --no-report --seq-len 1024 ${narrow[@]+"${narrow[@]}"}
for run in run run-8192 run-graphs run-layers; do
    if [ -f "$out/$run/results.jsonl" ]; then
        step "$run-scaling" 10 0 "$PYTHON" scripts/gpu_check.py scaling "$out/$run"
        step "$run-report" 30 0 attnbench report "$out/$run"
    else
        printf '%s\t%s\t0\n' "$run-report" "skipped: the run recorded nothing" >>"$out/steps.tsv"
        FAILED=1
    fi
done

{
    echo "gpu-check: $((SECONDS - START)) s in all; steps:"
    tail -n +2 "$out/steps.tsv" | while IFS=$'\t' read -r name status seconds; do
        printf '  %-20s %s (%s s)\n' "$name" "$status" "$seconds"
    done
    echo "written under $out:"
    (cd "$out" && find . -type f ! -name summary.txt | sed 's|^\./|  |' | sort)
} | tee "$out/summary.txt"
exit "$FAILED"
