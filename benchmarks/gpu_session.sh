#!/usr/bin/env bash
# Issue 7 (predict speed) measured on a lent GPU machine: every figure in two `run` calls.
#
#   bash benchmarks/gpu_session.sh STEP...      (from the repository root; logs go to $OUT/STEP.log and the
#                                                headline lines of every step to $OUT/summary.txt)
#
# Steps, with rough times on one H100 (estimates, not yet measured: the first GPU session should correct them
# here from the "(N s)" lines in its logs):
#   wheels      HERE, on the dev machine, not on the device: downloads pycocotools and shapely (the device has
#               neither, and no network) for its Python 3.12 into .whl/ (gitignored: `/.whl/` in .gitignore)
#   setup       ~2 min    prints the versions, installs .whl/*.whl into /tmp/site, builds the extension for sm_90
#                         (`TORCH_CUDA_ARCH_LIST=9.0 pip install --no-build-isolation --no-deps -e .`: --no-deps
#                         keeps the device's own torch 2.11). Every other device step runs it first when the
#                         machine is fresh (a machine is given back 30 s after a call, so assume every call is).
#   kernels     ~1.5 min  python -m mrseg_kernels.selfcheck, pytest tests/mrseg_kernels (CUDA tests run),
#                         benchmarks/roi_align.py --device cuda (and --channels-last)
#   predict-b8  ~3.5 min  model mode, batch 8, ours fp32 / fp16 / bf16 against torchvision fp32: 240 images
#                         (6 photos x 2 sizes x COPIES=20) in the throughput pass, 48 in the stage pass,
#                         and torch.profiler's top 25 ops + host-sync counts of one batch per model
#   predict-b1  ~3.5 min  the same at batch 1
#   drift       ~1.5 min  torchvision itself at fp16 and bf16 against torchvision fp32 (ours alongside): how far
#                         autocast moves this random-weight model's detections at all (12 images, parity only)
#   cli         ~3.5 min  `mrseg predict --batch 8 --workers 4` fp32 / fp16 / bf16 against the plain torchvision
#                         loop (batch 1, fp32) over a folder of 120 JPEGs (CLI_COPIES=10) to annotations.json
#   smi         ~5 s      nvidia-smi snapshot (and -q: clocks, power, utilisation)
#   call1 = setup kernels predict-b8 drift smi          call2 = setup predict-b1 cli
#
# Each call stops starting new work when its budget (BUDGET seconds, default 560) runs low, says so in the
# summary (SKIPPED / TIMED OUT lines), and skips the rest: rerun those steps in another call. Knobs (environment):
# COPIES, CLI_COPIES, STAGE_LIMIT (48), BUDGET, PYTHON (default python3).
#
# The session's plan (the run tool's calls; nothing else is needed):
#   0. here, once:   bash benchmarks/gpu_session.sh wheels
#   1. run(command="bash benchmarks/gpu_session.sh call1", carry=[".whl"], timeout_s=600)
#   2. run(command="bash benchmarks/gpu_session.sh call2", carry=[".whl"], timeout_s=600)
#   Read $OUT/summary.txt first (files_at/summary.txt), then the step logs (at most 8 files come back per
#   call: each call writes 5 or 6). About 22 of the 30 device minutes if both calls start a fresh machine;
#   a step skipped for time can go in a third call (e.g. `bash benchmarks/gpu_session.sh cli`) if the
#   budget allows (setup is repeated on a fresh machine: ~2 min + the machine's start).

set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
COPIES=${COPIES:-20}
CLI_COPIES=${CLI_COPIES:-10}
STAGE_LIMIT=${STAGE_LIMIT:-48}
BUDGET=${BUDGET:-560}
START=$SECONDS
OUT=${OUT:-$PWD/runs/gpu_session}
mkdir -p "$OUT"
SUMMARY=$OUT/summary.txt
PREDICT=(benchmarks/predict.py --device cuda --photos 6 --copies "$COPIES" --stage-limit "$STAGE_LIMIT" --no-rss)

left() { echo $((BUDGET - (SECONDS - START))); }

note() { echo "$*" | tee -a "$SUMMARY"; }

# timed CAP CMD...: CMD under `timeout`, at most CAP seconds and never past the call's budget; skipped
# (with a note) when less than a minute is left.
timed() {
    local cap=$1
    shift
    local limit
    limit=$(left)
    limit=$((limit - 10))
    if ((limit < 60)); then
        note "SKIPPED (budget: $(left) s left of $BUDGET): $*"
        return 0
    fi
    ((cap < limit)) || cap=$limit
    echo "+ [$(left) s left, cap $cap s] $*"
    local t0=$SECONDS
    timeout --kill-after=10 "$cap" "$@"
    local rc=$?
    ((rc == 124 || rc == 137)) && note "TIMED OUT after $cap s: $*"
    ((rc != 0 && rc != 124 && rc != 137)) && note "FAILED (exit $rc): $*"
    echo "  ($((SECONDS - t0)) s)"
    return 0
}

# Headline lines of a log into the summary (the step logs keep everything).
headlines() {
    local keep='^(RESULT|parity|ours |torchvision |\(strict|throughput pass|  mrseg |  torchvision |mrseg predict '
    keep+='|torchvision loop |torch |== |=== |[0-9]+ JPEGs|stage|preprocess|backbone|rpn|roi_heads|paste|other'
    keep+='|write|total|images/s|detections per|device=|pass |forward|OK|[0-9]+ (passed|failed|skipped)|python:'
    keep+='|note:|nvidia-smi|host syncs|\+ \[|  \([0-9]+ s\))'
    grep -E "$keep" "$1" >>"$SUMMARY" || true
}

step_wheels() {
    # Python 3.12 is what the device image runs (/work/.library/device/KINDS.md); `setup` prints it there.
    local pip=(python3 -m pip)
    [ -x .venv/bin/python ] && pip=(.venv/bin/python -m pip)
    "${pip[@]}" download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
        -d .whl pycocotools==2.0.11 shapely==2.2.0
    ls -la .whl
}

env_ok() {
    "$PY" - <<'EOF' 2>/dev/null
import sys
import pycocotools, shapely, mrseg, mrseg_kernels, torch
sys.exit(0 if mrseg_kernels.with_cuda() and torch.cuda.is_available() else 1)
EOF
}

export_env() {
    export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
    export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=${MAX_JOBS:-16}
    if [ -z "${CUDA_HOME:-}" ]; then
        if [ -x /usr/local/cuda/bin/nvcc ]; then
            export CUDA_HOME=/usr/local/cuda
        elif command -v nvcc >/dev/null; then
            CUDA_HOME=$(dirname "$(dirname "$(command -v nvcc)")")
            export CUDA_HOME
        fi
    fi
}

step_setup() {
    export_env
    echo "python: $(command -v "$PY") $("$PY" --version 2>&1)  (wheels in .whl/ must be for this version)"
    "$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'torchvision', torchvision.__version__, '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NO GPU')"
    nvcc --version 2>/dev/null | tail -2 || echo "nvcc: not found (CUDA_HOME=${CUDA_HOME:-unset})"
    if env_ok; then
        echo "already set up on this machine"
        return 0
    fi
    if compgen -G ".whl/*.whl" >/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    else
        note "no .whl/ here: run 'bash benchmarks/gpu_session.sh wheels' on the dev machine and carry [\".whl\"]"
    fi
    "$PY" -c "import pycocotools, shapely; print('pycocotools, shapely: ok')"
    echo "building the extension (CUDA_HOME=${CUDA_HOME:-unset}, TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST)"
    if ! timed 400 "$PY" -m pip install -q --no-index --no-build-isolation --no-deps -e .; then :; fi
    if ! env_ok; then
        echo "pip install -e did not give a CUDA build; trying setup.py build_ext --inplace"
        timed 400 "$PY" setup.py -q build_ext --inplace
    fi
    if env_ok; then note "setup: OK ($(left) s left)"; else note "setup: FAILED (see setup.log)"; fi
}

ensure_env() {
    export_env
    env_ok || step_setup
}

step_kernels() {
    ensure_env
    timed 60 "$PY" -m mrseg_kernels.selfcheck
    timed 240 "$PY" -m pytest -q -x tests/mrseg_kernels
    timed 90 "$PY" benchmarks/roi_align.py --device cuda
    timed 90 "$PY" benchmarks/roi_align.py --device cuda --channels-last
}

# predict_batch BATCH [more predict.py options]: ours fp32 / fp16 / bf16 against torchvision fp32.
predict_batch() {
    ensure_env
    local batch=$1
    shift
    for precision in fp32 fp16 bf16; do
        echo "=== model mode, batch $batch, ours $precision, torchvision fp32 ==="
        timed 200 "$PY" "${PREDICT[@]}" --batch "$batch" --precision "$precision" "$@"
    done
}

step_predict-b1() { predict_batch 1; }
step_predict-b8() { predict_batch 8 --profile 25; }

step_drift() {
    ensure_env
    for precision in fp16 bf16; do
        echo "=== torchvision and ours both at $precision, each against torchvision fp32 (parity only) ==="
        timed 150 "$PY" benchmarks/predict.py --device cuda --photos 6 --copies 1 --no-rss --throughput off \
            --batch 4 --precision "$precision" --tv-precision "$precision"
    done
}

step_cli() {
    ensure_env
    for precision in fp32 fp16 bf16; do
        echo "=== cli mode, mrseg predict --batch 8 --workers 4 --precision $precision ==="
        timed 200 "$PY" benchmarks/predict.py --mode cli --device cuda --photos 6 --copies "$CLI_COPIES" \
            --batch 8 --workers 4 --precision "$precision"
    done
}

step_smi() {
    nvidia-smi || echo "nvidia-smi: not available"
    nvidia-smi -q -d UTILIZATION,MEMORY,CLOCK,POWER,PERFORMANCE 2>/dev/null | head -120
}

usage() {
    awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"
    exit 2
}

run_step() {
    local name=$1
    local log=$OUT/$name.log
    note "## $name  (started with $(left) s of $BUDGET left)"
    "step_$name" 2>&1 | tee -a "$log"
    headlines "$log"
}

[ $# -gt 0 ] || usage
steps=()
for arg in "$@"; do
    case $arg in
        call1) steps+=(setup kernels predict-b8 drift smi) ;;
        call2) steps+=(setup predict-b1 cli) ;;
        wheels) step_wheels; exit $? ;;
        setup | kernels | predict-b1 | predict-b8 | drift | cli | smi) steps+=("$arg") ;;
        *) echo "unknown step: $arg" >&2; usage ;;
    esac
done
for s in "${steps[@]}"; do
    run_step "$s"
done
note "done in $((SECONDS - START)) s; logs in $OUT"
