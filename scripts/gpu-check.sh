#!/usr/bin/env bash
# Validate attnbench on one CUDA GPU (an H100 or H200) in about 7 minutes, writing everything
# under OUTDIR:
#   nvidia-smi.txt, nvidia-smi-q.txt  the GPU, its driver and its state
#   versions.json                     Python, torch (and its CUDA, cuDNN), triton, jax, ...
#   agreement.json                    the harness's median of torch.sdpa.flash (bf16, B4 H16
#                                     N4096 d128, fwd) against triton.testing.do_bench's, ratio
#   run-fwd/, run-fwd_bwd/            suites/gpu-check.toml (N 1024 and 2048) without torch.flex,
#                                     one run per mode: torch's kernels, then JAX and Keras on JAX
#   run-8192/                         suites/gpu-8192.toml without torch.flex: each backend at 8192
#   run-decode/                       suites/gpu-check-decode.toml: decode and grouped K/V heads
#   run-flex/                         torch.flex alone on two cases (it compiles per case)
#   run-graphs/                       a few torch cases with --cuda-graphs
#   run-layers/                       suites/gpu-layers.toml at N 1024
#   each run: results.jsonl, env.json (with the matmul and copy peaks it measured), scaling.json,
#   report.html, report.md
#   logs/STEP.log, steps.tsv, summary.txt
# Each step has a time limit, and the steps together stay within TOTAL_S; a step that fails or
# runs out of time is logged, and the script goes on with the next one. Each part is chosen so
# that no implementation or mode waits behind another's cap; the steps come in the order of
# what matters most, should the budget run out.
#
# usage: scripts/gpu-check.sh OUTDIR [--quick] [--archive DIR]
#   OUTDIR         a new or empty directory
#   --quick        smaller runs (bfloat16, full attention only), about 5 minutes
#   --archive DIR  also write DIR/gpu-check.tar.gz (all of OUTDIR) and DIR/summary.txt: two
#                  files, for a machine that sends back only a few
# Environment: PYTHON (default python3), the interpreter that has attnbench's dependencies;
# GPU_CHECK_WITHOUT_GPU=1 skips the check that torch sees a GPU (a rehearsal on a CPU machine:
# every CUDA case is then recorded unsupported, and every step still runs).
set -u

USAGE="usage: scripts/gpu-check.sh OUTDIR [--quick] [--archive DIR]"
ARCHIVE_LIMIT_BYTES=$((15 * 1024 * 1024))  # what comes back from a lent machine: 16 MiB a file

refuse() {
    echo "gpu-check: $*" >&2
    exit 2
}

out="" quick=0 archive=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        --archive) [ $# -ge 2 ] || refuse "--archive needs a directory ($USAGE)"
                   archive=$2; shift ;;
        -h | --help) echo "$USAGE"; exit 0 ;;
        -*) refuse "unknown option $1 ($USAGE)" ;;
        *) [ -z "$out" ] || refuse "one OUTDIR expected, got '$out' and '$1' ($USAGE)"
           out=$1 ;;
    esac
    shift
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
if [ -n "$archive" ] && [ ! -d "$archive" ]; then
    refuse "--archive $archive: not a directory: expected an existing directory"
fi
PYTHON=${PYTHON:-python3}
command -v nvidia-smi >/dev/null 2>&1 || refuse "no CUDA device here: nvidia-smi not found"
command -v "$PYTHON" >/dev/null 2>&1 || refuse "no Python interpreter '$PYTHON' (set PYTHON)"
script_dir=${BASH_SOURCE[0]%/*}
[ "$script_dir" != "${BASH_SOURCE[0]}" ] || script_dir=.
ROOT=$(cd "$script_dir/.." && pwd)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
cd "$ROOT" || refuse "cannot enter $ROOT"
CUDA_CHECK='
import importlib
import os
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
if os.environ.get("GPU_CHECK_WITHOUT_GPU") != "1":
    if not torch.cuda.is_available():
        sys.exit("no CUDA device here: torch.cuda.is_available() is false (a CPU build of "
                 "torch, or no GPU visible)")
    from harness.measure.cuda import event_clock
    try:
        event_clock("cuda")
    except Exception as exc:
        sys.exit(f"the CUDA clock cannot be built ({type(exc).__name__}: {exc})")
'
why=$("$PYTHON" -c "$CUDA_CHECK" 2>&1) || refuse "cannot run here: ${why##*$'\n'}"
for program in timeout tar; do
    command -v "$program" >/dev/null 2>&1 || refuse "$program (GNU coreutils, tar) not found"
done

mkdir -p "$out/logs" || refuse "cannot create $out"
out=$(cd "$out" && pwd)
START=$SECONDS
FAILED=0
printf 'step\tstatus\tseconds\n' >"$out/steps.tsv"

# step NAME LIMIT_S RESERVE_S COMMAND...: run COMMAND (a program: `timeout` cannot run a shell
# function) for at most LIMIT_S seconds (less when the total budget, minus RESERVE_S kept for
# the steps after it, has less left), output in logs/NAME.log. Interrupted with SIGINT first,
# so a run keeps what it recorded.
step() {
    local name=$1 limit=$2 reserve=$3 left rc status t0=$SECONDS
    shift 3
    left=$((TOTAL_S - (SECONDS - START) - reserve))
    if [ "$left" -lt "$limit" ]; then limit=$left; fi
    if [ "$limit" -lt 5 ]; then
        status="skipped: out of time"
        FAILED=1
    else
        echo "[gpu-check] $name (at most ${limit} s)"
        timeout --signal=INT --kill-after=8 "$limit" "$@" >"$out/logs/$name.log" 2>&1
        rc=$?
        case $rc in
            0) status="ok" ;;
            124 | 137) status="timed out after ${limit} s (what it wrote is kept)"; FAILED=1 ;;
            1) status="exit code 1: cases that failed (a run: see its report) or a failed step (logs/$name.log)"
               FAILED=1 ;;
            *) status="failed with exit code $rc (see logs/$name.log)"; FAILED=1 ;;
        esac
    fi
    printf '%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - t0))" >>"$out/steps.tsv"
    echo "[gpu-check] $name: $status"
}

attnbench=("$PYTHON" -m harness.cli)
gpu_check=("$PYTHON" scripts/gpu_check.py)
# the kernels but torch.flex: it compiles per case, so it runs apart on a few cases
KERNELS=torch.naive,torch.sdpa,torch.sdpa.math,torch.sdpa.flash,torch.sdpa.efficient
KERNELS=$KERNELS,torch.sdpa.cudnn,jax.sdpa,keras.ops.jax,xformers
if [ "$quick" -eq 1 ]; then
    TOTAL_S=270  # every step together; the checks before and the archive after add seconds
    narrow=(--dtype bfloat16 --causal false)
    layers=(--mode fwd)
    fwd_s=45 bwd_s=60 n8192_s=30 decode_s=35 flex_s=60 graphs_s=25 layers_s=30
else
    TOTAL_S=400
    narrow=()
    layers=()
    fwd_s=75 bwd_s=90 n8192_s=65 decode_s=45 flex_s=75 graphs_s=30 layers_s=50
fi
reports_s=45  # kept for the last step: every run's scaling.json and reports, in one process

step nvidia-smi 15 "$reports_s" \
    bash -c 'nvidia-smi >"$1/nvidia-smi.txt" && nvidia-smi -q >"$1/nvidia-smi-q.txt"' _ "$out"
step versions 30 "$reports_s" "${gpu_check[@]}" versions "$out/versions.json"
step agreement 45 "$reports_s" "${gpu_check[@]}" agreement "$out/agreement.json"
for mode in fwd fwd_bwd; do
    limit=$fwd_s
    [ "$mode" = fwd ] || limit=$bwd_s
    step "run-$mode" "$limit" "$reports_s" "${attnbench[@]}" run gpu-check --out "$out/run-$mode" \
        --no-report --impl "$KERNELS" --mode "$mode" ${narrow[@]+"${narrow[@]}"}
done
step run-8192 "$n8192_s" "$reports_s" "${attnbench[@]}" run gpu-8192 --out "$out/run-8192" \
    --no-report --impl "$KERNELS" ${narrow[@]+"${narrow[@]}"}
step run-decode "$decode_s" "$reports_s" "${attnbench[@]}" run gpu-check-decode \
    --out "$out/run-decode" --no-report
step run-flex "$flex_s" "$reports_s" "${attnbench[@]}" run gpu-check --out "$out/run-flex" \
    --no-report --impl torch.flex --seq-len 1024 --dtype bfloat16 --causal true
step run-graphs "$graphs_s" "$reports_s" "${attnbench[@]}" run gpu-check --out "$out/run-graphs" \
    --no-report --cuda-graphs --impl torch.naive,torch.sdpa,torch.sdpa.flash --seq-len 1024 \
    --dtype bfloat16 --causal false
step run-layers "$layers_s" "$reports_s" "${attnbench[@]}" run gpu-layers --out "$out/run-layers" \
    --no-report --seq-len 1024 ${layers[@]+"${layers[@]}"}
runs=()
shopt -s nullglob
for dir in "$out"/run-*/; do
    if [ -f "$dir/results.jsonl" ]; then
        runs+=("${dir%/}")
    else
        printf '%s\t%s\t0\n' "$(basename "$dir")-report" "skipped: the run recorded nothing" \
            >>"$out/steps.tsv"
        FAILED=1
    fi
done
shopt -u nullglob
if [ "${#runs[@]}" -gt 0 ]; then
    step reports "$reports_s" 0 "${gpu_check[@]}" reports "${runs[@]}"
fi

{
    echo "gpu-check: $((SECONDS - START)) s in all; steps:"
    tail -n +2 "$out/steps.tsv" | while IFS=$'\t' read -r name status seconds; do
        printf '  %-20s %s (%s s)\n' "$name" "$status" "$seconds"
    done
    echo "written under $out:"
    (cd "$out" && find . -type f ! -name summary.txt | sed 's|^\./|  |' | sort)
} >"$out/summary.txt"

# pack: OUTDIR whole, or without the HTML reports (which `attnbench report` writes again from
# the records) when that is too large to come back
if [ -n "$archive" ]; then
    tarball="$archive/gpu-check.tar.gz"
    parent=$(dirname "$out") name=$(basename "$out")
    if tar -czf "$tarball" -C "$parent" "$name" &&
            [ "$(wc -c <"$tarball")" -gt "$ARCHIVE_LIMIT_BYTES" ]; then
        tar -czf "$tarball" -C "$parent" --exclude=report.html "$name" &&
            echo "$tarball: without report.html (all of it was over 15 MiB)" >>"$out/summary.txt"
    fi
    [ -f "$tarball" ] && echo "packed into $tarball ($(wc -c <"$tarball") bytes)" \
        >>"$out/summary.txt" || { echo "could not pack into $tarball" >>"$out/summary.txt"; FAILED=1; }
    cp "$out/summary.txt" "$archive/summary.txt"
fi
cat "$out/summary.txt"
exit "$FAILED"
