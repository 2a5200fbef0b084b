#!/usr/bin/env bash
# The TensorRT plugins on one GPU, in one call (DEADLINE bounds it: 400 s by default; needs nvcc, g++,
# compute-sanitizer, python3 with torch and numpy; no TensorRT library, headers only). The cases of the Mamba1
# plugins (Int8CausalConv1d, Int8SelectiveScan, HadamardQuantize) passed on an H100 on 2026-12-07
# (benchmarks/results/tensorrt_plugin_harness.txt); the Mamba2 plugins' cases (Int8CausalConv1dChannelScales,
# Int8SSDScan, GatedRMSNormHadamardQuantize, GatedRMSNormQuantize: the demo Mamba2's and Mamba2-2.7b's shapes) are
# in both sets since; their model set passed on an H100 on 2026-12-07
# (benchmarks/results/tensorrt_plugin_harness_quamba2_h100.txt, the sanitizer stages cut by that call's deadline).
#   1. build the library and the harness for sm_SM against TRT_INCLUDE, and (when present) against TRT_INCLUDE_2;
#      meanwhile make the cases here (make_cases.py: `model`, the ops at d_inner 768 and 5120, l up to 2048, several
#      hundred MB; `small`, l up to 200, for the sanitizers): case data never travels
#   2. harness selftest (host-side interface checks) on both builds
#   3. harness run over the model set, in TensorRT's call order (trtOrder.cpp), and check_cases.py
#   4. the second build runs the small set too (check_cases.py)
#   5. compute-sanitizer memcheck (with leak check), racecheck and initcheck over the harness run of the small set
#      (--no-timing), each followed by check_cases.py; then memcheck over the model set while DEADLINE allows
#   6. the record: $OUT/tensorrt_plugin_harness.txt (command, GPU, date, every stage's output and result), the format
#      of benchmarks/results/tensorrt_plugin_harness.txt: copy it there
#
#   OUT=DIR bash plugins/tensorrt/tests/run_on_gpu.sh [TRT_INCLUDE] [SM] [WORK]
#
#   TRT_INCLUDE    default third_party/tensorrt-10.3/include of this checkout (JetPack 6's TensorRT; git-ignored, so
#                  a device call must carry it)
#   SM             default 90 (H100/H200)
#   WORK           default /tmp/edge_quamba_trt_harness (emptied first): builds, cases, outputs
#   OUT            default $WORK/out; gets at most 7 files: tensorrt_plugin_harness.txt, check_detail.txt,
#                  memcheck.txt, racecheck.txt, initcheck.txt, memcheck_model.txt, build.log
#   TRT_INCLUDE_2  default third_party/tensorrt-main/include (TensorRT 11.x) when present; empty: no second build
#   DEADLINE       seconds for the whole script (default 400); the sanitizer runs get what is left, each small-set run
#                  at most SANITIZE_S (default 90) seconds
#   ONLY           only the cases whose name contains this (make_cases.py --only; e.g. ONLY=SSD), default all
#   MAIN_SET       the case set of the main run (default model; small for a quick check, e.g. on a Jetson)
#   SANITIZERS     1 (default) runs the compute-sanitizer stages, 0 skips them
# Exit status 0 when every stage passed, 1 otherwise (a small-set sanitizer run cut by the deadline is not a pass; the
# model-set memcheck is optional: SKIPPED when the deadline leaves no time for it or cuts it).
set -uo pipefail

TESTS=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$TESTS/../../.." && pwd)
TRT_INCLUDE=${1:-$REPO/third_party/tensorrt-10.3/include}
SM=${2:-90}
WORK=${3:-/tmp/edge_quamba_trt_harness}
OUT=${OUT:-$WORK/out}
DEADLINE=${DEADLINE:-400}
SANITIZE_S=${SANITIZE_S:-90}
ONLY=${ONLY:-}
MAIN_SET=${MAIN_SET:-model}
SANITIZERS=${SANITIZERS:-1}
if [ -z "${TRT_INCLUDE_2+set}" ]; then
    TRT_INCLUDE_2=$REPO/third_party/tensorrt-main/include
    [ -f "$TRT_INCLUDE_2/NvInferRuntime.h" ] || TRT_INCLUDE_2=
fi
export PYTHONPATH=$REPO PYTHONUNBUFFERED=1 PATH=$PATH:/usr/local/cuda/bin
RECORD=$OUT/tensorrt_plugin_harness.txt
t0=$(date +%s)
left() { echo $(( DEADLINE - ($(date +%s) - t0) )); }
failed=()
results=()

rm -rf "$WORK"
mkdir -p "$WORK" "$OUT"
: > "$RECORD"
say() { echo "$*" | tee -a "$RECORD"; }
stage() { say "== [$(( $(date +%s) - t0 )) s] $*"; }
result() { # NAME PASS|FAIL|TIMEOUT|SKIPPED DETAIL
    results+=("$(printf '%-44s %-8s %s' "$1" "$2" "$3")")
    [ "$2" = PASS ] || [ "$2" = SKIPPED ] || failed+=("$1")
}
passfail() { [ "$1" -eq 0 ] && echo PASS || echo FAIL; }
headers() { # the TensorRT version a header folder declares (11.x defines NV_TENSORRT_* through TRT_*_ENTERPRISE)
    awk '$1 == "#define" { v[$2] = $3 }
        END { split("MAJOR MINOR PATCH", p, " "); s = ""
              for (i = 1; i <= 3; ++i) { x = v["NV_TENSORRT_" p[i]]; if (x in v) x = v[x]; s = s (i > 1 ? "." : "") x }
              print s }' "$1/NvInferVersion.h"
}

if [ ! -f "$TRT_INCLUDE/NvInferRuntime.h" ]; then
    echo "$TRT_INCLUDE holds no NvInferRuntime.h (a device call must carry third_party/tensorrt-*/include)" >&2
    exit 2
fi
GPU=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
say "# TensorRT plugin harness on a GPU: the int8 IPluginV3 plugins (Mamba1: Int8CausalConv1d, Int8SelectiveScan,"
say "# HadamardQuantize; Mamba2, never on a GPU before this run: Int8CausalConv1dChannelScales, Int8SSDScan,"
say "# GatedRMSNorm(Hadamard)Quantize) driven through their own interfaces in TensorRT's"
say "# call order (no TensorRT library): build-time plugin with a min/opt/max profile, runtime plugin from the serialized"
say "# fields attached to a stub context, onShapeChange through l = 1, 7, 512, 2048, 7 on one object, decode replays of"
say "# a captured CUDA graph (states ping-ponged, then in place), outputs poisoned before every checked call, compared with"
say "# edge_quamba.quant.qops by check_cases.py; every int8 activation input holds -128 codes (read as -127)."
PYTHON=$(python3 -c 'import sys, torch; print(f"Python {sys.version.split()[0]} + torch {torch.__version__}")' 2>&1)
say "# GPU: ${GPU:-no nvidia-smi}; $(nvcc --version | tail -1); $PYTHON"
say "# $(compute-sanitizer --version 2>/dev/null | grep -m1 -i version || echo 'compute-sanitizer not found')"
CODE=$(git -C "$REPO" log -1 --format='%h %s' 2>/dev/null | cut -c1-100)
say "# Code: ${CODE:-no git metadata here (a copy of the working tree)}"
SECOND=${TRT_INCLUDE_2:+; second build: $(headers "$TRT_INCLUDE_2") ($TRT_INCLUDE_2)}
say "# TensorRT headers: $(headers "$TRT_INCLUDE") ($TRT_INCLUDE)$SECOND"
say "# Command (repository root on the GPU machine): OUT=$OUT ONLY=$ONLY DEADLINE=$DEADLINE bash plugins/tensorrt/tests/run_on_gpu.sh $*"
say "# Date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
say ""

stage "build (sm_$SM) and make the cases, in parallel"
bash "$TESTS/build_harness.sh" "$TRT_INCLUDE" "$SM" "$WORK/build" > "$OUT/build.log" 2>&1 & build1=$!
if [ -n "$TRT_INCLUDE_2" ]; then
    bash "$TESTS/build_harness.sh" "$TRT_INCLUDE_2" "$SM" "$WORK/build2" > "$WORK/build2.log" 2>&1 & build2=$!
fi
python3 "$TESTS/make_cases.py" "$WORK/$MAIN_SET" --set "$MAIN_SET" --only="$ONLY" --jobs 6 \
    > "$WORK/make_model.log" 2>&1 & model=$!
small=
if [ "$MAIN_SET" != small ]; then
    python3 "$TESTS/make_cases.py" "$WORK/small" --set small --only="$ONLY" --jobs 2 > "$WORK/make_small.log" 2>&1 &
    small=$!
fi
wait $build1; rc=$?
tail -1 "$OUT/build.log" | tee -a "$RECORD"
result "build, $(headers "$TRT_INCLUDE") headers" "$(passfail $rc)" "sm_$SM (build.log)"
if [ -n "$TRT_INCLUDE_2" ]; then
    wait $build2; rc2=$?
    cat "$WORK/build2.log" >> "$OUT/build.log"
    result "build, $(headers "$TRT_INCLUDE_2") headers" "$(passfail $rc2)" "sm_$SM (build.log)"
fi
wait $model; rcm=$?
rcs=0
[ -n "$small" ] && { wait $small; rcs=$?; }
if [ $rc -ne 0 ] || [ $rcm -ne 0 ] || [ $rcs -ne 0 ]; then
    tail -5 "$WORK"/make_*.log | tee -a "$RECORD"
    say "build or make_cases failed: nothing to run"
    exit 1
fi
say "cases: $(ls "$WORK/$MAIN_SET" | wc -l) $MAIN_SET ($(du -sh "$WORK/$MAIN_SET" | cut -f1)), $(ls "$WORK/small" | wc -l) small"
H=$WORK/build/harness

stage "harness selftest (host-side interface checks)"
clean_outputs() { # remove what a harness run wrote into a case set (outputs, in-place copies, timings)
    find "$1" -name step.txt | while read -r f; do
        awk -v d="$(dirname "$f")" '$1 == "output" { print d "/" $NF; print d "/" $NF ".alias" }' "$f"
    done | xargs rm -f
    rm -f "$1"/*/result.txt
}
"$H" selftest 2> "$WORK/selftest.stderr" | tail -1 | tee -a "$RECORD"
rc=${PIPESTATUS[0]}
result "selftest, $(headers "$TRT_INCLUDE") build" "$(passfail $rc)" ""
if [ -n "$TRT_INCLUDE_2" ] && [ -x "$WORK/build2/harness" ]; then
    "$WORK/build2/harness" selftest 2> /dev/null | tail -1 | tee -a "$RECORD"
    rc=${PIPESTATUS[0]}
    result "selftest, $(headers "$TRT_INCLUDE_2") build" "$(passfail $rc)" ""
fi

stage "harness run, $MAIN_SET set, in TensorRT's call order"
"$H" run "$WORK/$MAIN_SET"/* 2>&1 | tee -a "$RECORD"
rc_run=${PIPESTATUS[0]}
stage "comparison with edge_quamba.quant.qops (check_cases.py)"
python3 "$TESTS/check_cases.py" "$WORK/$MAIN_SET"/* --jobs 6 --detail "$OUT/check_detail.txt" 2>&1 | tee -a "$RECORD"
rc_check=${PIPESTATUS[0]}
result "run + check, $MAIN_SET set" "$(passfail $(( rc_run | rc_check )))" "harness rc $rc_run, check rc $rc_check"

if [ -n "$TRT_INCLUDE_2" ] && [ -x "$WORK/build2/harness" ]; then
    stage "second build ($(headers "$TRT_INCLUDE_2") headers): harness run + check, small set"
    clean_outputs "$WORK/small"
    "$WORK/build2/harness" run "$WORK"/small/* > "$WORK/run2.log" 2>&1
    rc_run=$?
    tail -1 "$WORK/run2.log" | tee -a "$RECORD"
    python3 "$TESTS/check_cases.py" "$WORK"/small/* --jobs 6 > "$WORK/check2.log" 2>&1
    rc_check=$?
    tail -1 "$WORK/check2.log" | tee -a "$RECORD"
    result "run + check, small set, second build" "$(passfail $(( rc_run | rc_check )))" \
        "harness rc $rc_run, check rc $rc_check"
fi

# compute-sanitizer NEED TOOL LOG SET [extra flags]: the harness run of a case set (no timing), then check_cases.py.
# NEED "optional": a run the deadline cuts or leaves no time for is recorded, not failed.
sanitize() {
    local need=$1 tool=$2 log=$3 set=$4; shift 4
    local late=TIMEOUT
    [ "$need" = optional ] && late=SKIPPED
    if [ "$SANITIZERS" = 0 ]; then
        result "$tool, $set set" SKIPPED "SANITIZERS=0"
        return
    fi
    local budget=$(( $(left) - 15 ))
    [ "$need" = required ] && [ $budget -gt "$SANITIZE_S" ] && budget=$SANITIZE_S
    if [ $budget -lt 20 ]; then
        result "$tool, $set set" "$late" "no time left (DEADLINE $DEADLINE s)"
        return
    fi
    if ! command -v compute-sanitizer > /dev/null; then
        result "$tool, $set set" FAIL "compute-sanitizer not found"
        return
    fi
    stage "compute-sanitizer --tool $tool over the harness run, $set set (timeout $budget s)"
    clean_outputs "$WORK/$set"
    local start=$(date +%s)
    timeout "$budget" compute-sanitizer --tool "$tool" --error-exitcode 3 "$@" \
        "$H" run --no-timing "$WORK/$set"/* > "$WORK/$log" 2>&1
    local rc=$? took=$(( $(date +%s) - start ))
    if [ "$(wc -l < "$WORK/$log")" -gt 3000 ]; then  # many errors: keep the first ones and the summary
        { head -2000 "$WORK/$log"; echo "[... $(wc -l < "$WORK/$log") lines, cut ...]"; tail -50 "$WORK/$log"; } \
            > "$OUT/$log"
    else
        cp "$WORK/$log" "$OUT/$log"
    fi
    local summary
    summary=$(grep -E "ERROR SUMMARY|RACECHECK SUMMARY|LEAK SUMMARY|Device not supported|run: [0-9]+ checks" \
        "$WORK/$log" | tr '\n' ' ')
    say "rc $rc after $took s: $summary"
    if [ $rc -eq 124 ]; then
        result "$tool, $set set" "$late" "cut by the deadline after $took s"
    elif grep -q "Device not supported" "$WORK/$log"; then
        result "$tool, $set set" FAIL "compute-sanitizer refused the device (a gVisor machine?): see $log"
    elif [ $rc -ne 0 ]; then
        result "$tool, $set set" FAIL "rc $rc: see $log"
    else
        python3 "$TESTS/check_cases.py" "$WORK/$set"/* --jobs 6 > "$WORK/check_$log" 2>&1
        local rc_check=$?
        say "outputs of the sanitized run: $(tail -1 "$WORK/check_$log")"
        result "$tool, $set set" "$(passfail $rc_check)" "$took s; 0 sanitizer errors; check rc $rc_check"
    fi
}
sanitize required memcheck memcheck.txt small --leak-check full
sanitize required racecheck racecheck.txt small
sanitize required initcheck initcheck.txt small
[ "$MAIN_SET" = model ] && sanitize optional memcheck memcheck_model.txt model --leak-check full

say ""
stage "summary"
for line in "${results[@]}"; do say "$line"; done
if [ ${#failed[@]} -eq 0 ]; then
    say "ALL PASSED"
    exit 0
fi
say "FAILED: ${failed[*]}"
exit 1
