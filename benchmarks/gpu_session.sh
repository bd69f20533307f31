#!/usr/bin/env bash
# Issue 16: the whole GPU check in ONE device call of at most ~7 minutes (BUDGET seconds, default 420).
#
#   here, once:     bash benchmarks/gpu_session.sh wheels            (pycocotools + shapely for the device's
#                                                                      Python 3.12 into .whl/, gitignored)
#   on the device:  run(command="bash benchmarks/gpu_session.sh all", carry=[".whl"], timeout_s=480)
#   rerun failures: run(command="bash benchmarks/gpu_session.sh STEP...", carry=[".whl"], timeout_s=300)
#   dry run here:   DRY=1 bash benchmarks/gpu_session.sh all        (--device cpu, tiny sizes, same steps)
#
# Steps, in priority order (`all` runs them in this order; each writes $OUT/STEP.log, and its headline lines
# go to $OUT/summary.txt, which is written first and grows as steps end):
#   setup    versions, carried wheels into /tmp/site, the extension built for sm_90 with all cores
#   kernels  mrseg_kernels.selfcheck, tests/mrseg_kernels and every other test with a CUDA variant,
#            benchmarks/roi_align.py --device cuda, NCHW and --channels-last
#   predict  model mode, batch 8: ours fp32 then fp16 against torchvision fp32 (throughput pass, parity,
#            profile of one batch)
#   cli      mrseg predict --precision fp16 --batch 8 on a folder of JPEGs against the plain torchvision loop
#   train    20 AMP training iterations on the shapes data, then --resume for 10 more (gpu_train_check.py)
#   smi      nvidia-smi (utilisation is also sampled during predict and cli)
# A step that fails or times out is noted in the summary and the next one starts; a step is skipped when
# less than 30 s of the budget is left. Knobs: BUDGET, COPIES (8), CLI_COPIES (5), PYTHON (python3).

set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
DRY=${DRY:-0}
BUDGET=${BUDGET:-420}
START=$SECONDS
OUT=${OUT:-$PWD/runs/gpu_session}
mkdir -p "$OUT"
SUMMARY=$OUT/summary.txt
if [ "$DRY" = 1 ]; then
    DEVICE=cpu COPIES=${COPIES:-1} CLI_COPIES=${CLI_COPIES:-1} BATCH=2 HALF=bf16 # fp16 is CUDA-only
    SIZES=(--sizes 320x240)
    TRAIN=(--iters 4 --more 2 --size 64 --batch 2 --arch r18-fpn)
else
    DEVICE=cuda COPIES=${COPIES:-8} CLI_COPIES=${CLI_COPIES:-5} BATCH=8 HALF=fp16
    SIZES=()
    TRAIN=(--iters 20 --more 10 --size 256 --batch 8)
fi

left() { echo $((BUDGET - (SECONDS - START))); }
note() { echo "$*" | tee -a "$SUMMARY"; }

# timed CAP CMD...: CMD under `timeout`, at most CAP seconds and never past the budget; never fails the caller.
timed() {
    local cap=$1
    shift
    local limit=$(($(left) - 5))
    if ((limit < 30)); then
        note "SKIPPED (budget: $(left) s left of $BUDGET): $*"
        return 0
    fi
    ((cap < limit)) || cap=$limit
    echo "+ [$(left) s left, cap $cap s] $*"
    local t0=$SECONDS
    timeout --kill-after=5 "$cap" "$@"
    local rc=$?
    ((rc == 124 || rc == 137)) && note "TIMED OUT after $cap s: $*"
    ((rc != 0 && rc != 124 && rc != 137)) && note "FAILED (exit $rc): $*"
    echo "  ($((SECONDS - t0)) s)"
    return 0
}

headlines() {
    local keep='^(RESULT|parity|ours |torchvision |\(strict|throughput pass|  mrseg |  torchvision |mrseg predict '
    keep+='|torchvision loop |torch |== |=== |[0-9]+ JPEGs|images/s|detections per|device=|pass |forward|backward'
    keep+='|OK|FAIL|.*[0-9]+ (passed|failed|skipped|error)|python:|note:|host syncs|first run|ratio|speedup'
    keep+='|selfcheck|GPU util|utilisation|\+ \[|  \([0-9]+ s\))'
    grep -E "$keep" "$1" >>"$SUMMARY" || true
}

step_wheels() {
    local pip=(python3 -m pip)
    [ -x .venv/bin/python ] && pip=(.venv/bin/python -m pip)
    "${pip[@]}" download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl pycocotools==2.0.11 shapely==2.2.0
    ls -la .whl
}

env_ok() {
    "$PY" -c "
import sys
import pycocotools, shapely, mrseg, mrseg_kernels, torch
ok = sys.argv[1] != 'cuda' or (mrseg_kernels.with_cuda() and torch.cuda.is_available())
sys.exit(0 if ok else 1)" "$DEVICE" 2>/dev/null
}

export_env() {
    export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
    export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=${MAX_JOBS:-$(nproc)}
    if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then export CUDA_HOME=/usr/local/cuda; fi
}

step_setup() {
    export_env
    echo "python: $(command -v "$PY") $("$PY" --version 2>&1)"
    "$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'torchvision', torchvision.__version__, '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NO GPU')"
    if env_ok; then
        note "setup: OK (already set up)"
        return 0
    fi
    if [ "$DEVICE" = cuda ] && compgen -G ".whl/*.whl" >/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    fi
    echo "building the extension (CUDA_HOME=${CUDA_HOME:-unset}, arch $TORCH_CUDA_ARCH_LIST, $MAX_JOBS jobs)"
    [ "$DEVICE" = cuda ] && timed 240 "$PY" setup.py -q build_ext --inplace
    if env_ok; then note "setup: OK ($(left) s left)"; else note "setup: FAILED (see setup.log)"; fi
}

step_kernels() {
    export_env
    timed 60 "$PY" -m mrseg_kernels.selfcheck
    # every test with a CUDA variant: the kernels, the precision tests, RPN top-k, batches, metrics, device
    # (4 workers where pytest-xdist is installed, as on the device image; one process otherwise)
    local workers=()
    "$PY" -c "import xdist" 2>/dev/null && workers=(-n 4)
    timed 120 "$PY" -m pytest -q -p no:cacheprovider "${workers[@]}" tests/mrseg_kernels \
        tests/engine/predict/test_predictor_precision.py tests/cli/test_predict_precision.py \
        tests/model/test_rpn.py tests/engine/predict/test_batches.py tests/engine/train/test_metrics.py \
        tests/engine/test_device.py
    timed 60 "$PY" benchmarks/roi_align.py --device "$DEVICE" --repeats 5
    timed 60 "$PY" benchmarks/roi_align.py --device "$DEVICE" --repeats 5 --channels-last
}

step_predict() {
    export_env
    local precision
    for precision in fp32 $HALF; do
        echo "=== model mode, batch $BATCH, ours $precision, torchvision fp32 ==="
        local profile=()
        [ "$precision" = "$HALF" ] && profile=(--profile 20)
        timed 100 "$PY" benchmarks/predict.py --device "$DEVICE" --photos 6 "${SIZES[@]}" --copies "$COPIES" \
            --stage-limit 16 --no-rss --batch "$BATCH" --precision "$precision" --throughput on "${profile[@]}"
    done
}

step_cli() {
    export_env
    echo "=== cli mode, mrseg predict --batch $BATCH --workers 4 --precision $HALF ==="
    timed 110 "$PY" benchmarks/predict.py --mode cli --device "$DEVICE" --photos 6 "${SIZES[@]}" \
        --copies "$CLI_COPIES" --batch "$BATCH" --workers 4 --precision "$HALF"
}

step_train() {
    export_env
    timed 100 "$PY" benchmarks/gpu_train_check.py --device "$DEVICE" "${TRAIN[@]}" --out "$OUT.train"
}

step_smi() {
    nvidia-smi || echo "nvidia-smi: not available"
    nvidia-smi -q -d UTILIZATION,MEMORY,CLOCK,POWER 2>/dev/null | head -80
}

run_step() {
    local name=$1 log=$OUT/$1.log
    note "## $name  (started with $(left) s of $BUDGET left)"
    "step_$name" >"$log" 2>&1
    headlines "$log"
}

steps=()
for arg in "$@"; do
    case $arg in
        all) steps+=(setup kernels predict cli train smi) ;;
        wheels)
            step_wheels
            exit $?
            ;;
        setup | kernels | predict | cli | train | smi) steps+=("$arg") ;;
        *)
            echo "unknown step: $arg; steps: all setup kernels predict cli train smi wheels" >&2
            exit 2
            ;;
    esac
done
if [ ${#steps[@]} -eq 0 ]; then
    echo "usage: bash $0 all | STEP..." >&2
    exit 2
fi
note "gpu_session: ${steps[*]} (budget $BUDGET s, device $DEVICE)"
# every later step needs the build, and every call may find a fresh machine: set up first
[ "${steps[0]}" = setup ] || run_step setup
for s in "${steps[@]}"; do run_step "$s"; done
note "done in $((SECONDS - START)) s; logs in $OUT"
