#!/usr/bin/env bash
# One GPU-machine call for the TensorRT plugins of the 4-bit configs (branch trt4bit; run from the repository root;
# no TensorRT library needed: the plugins are driven through their own IPluginV3 interfaces; logs in $OUT):
#   1. build the plugin library, harness and w4_harness for this GPU against TensorRT 10.3's headers
#      (plugins/tensorrt/tests/build_harness.sh; third_party/tensorrt-10.3/include must be in the tree),
#   2. both harnesses' host-side selftests,
#   3. the `small` w4 case set under compute-sanitizer memcheck (every plugin, in TensorRT's call order, CUDA-graph
#      replays included), then compared,
#   4. the `model` w4 case set (Mamba-2.8B's four linears at W4A8 and W4A16, group size 64, and the float16 scan at
#      d_inner 5120; l 1, 7, 512, b 2 x l 130, back to 7, a 3-replay CUDA-graph decode) and its comparison,
#   5. the int8 plugins' `small` case set in TensorRT's call order (make_cases.py --set small, harness run,
#      check_cases.py): their common PluginBase changed under them (int fields, per-dim output shapes). Their full
#      run (model set, both header builds, compute-sanitizer) is plugins/tensorrt/tests/run_on_gpu.sh.
# Carry the ignored TensorRT headers: run(..., carry=["third_party/tensorrt-10.3"]) (780 KB).
# DEADLINE (seconds from the start, default 420) bounds the whole script; each step has its own timeout inside it (a
# step with under 5 s left is not run and says so). INT8_CASES=0 skips step 5 (when run_on_gpu.sh runs in the same
# call).
# Files under $OUT: run.txt (GPU, versions, progress, the comparison summaries), selftest.txt, memcheck_w4.txt,
# check_small.txt, run_model.txt (median time per step), check_model.txt, int8_cases.txt.
set -o pipefail
OUT=${OUT:-gpu-out}
DEADLINE=${DEADLINE:-420}
INT8_CASES=${INT8_CASES:-1}
SM=${SM:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)}
TRT_INCLUDE=${TRT_INCLUDE:-$PWD/third_party/tensorrt-10.3/include}
WORK=${WORK:-/tmp/eq_trt_w4}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD PATH=$PATH:/usr/local/cuda/bin
t0=$(date +%s)
elapsed() { echo $(( $(date +%s) - t0 )); }
left() { echo $(( DEADLINE - $(date +%s) + t0 )); }
log() { echo "[$(elapsed) s] $*" | tee -a "$OUT/run.txt"; }
# bounded SECONDS CMD...: CMD under `timeout SECONDS`, or, when fewer than 5 s are left, not run at all (rc 124 and
# a line saying so; a negative count would reach timeout(1) as an option)
bounded() {
  local s=$1; shift
  if [ "$s" -lt 5 ]; then echo "not run: no time left (DEADLINE $DEADLINE s)"; return 124; fi
  timeout "$s" "$@"
}
TESTS=plugins/tensorrt/tests

{ date -u; git log --oneline -1; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  nvcc --version | tail -1; nproc; echo "sm_$SM, TensorRT headers $TRT_INCLUDE"
  grep -h -E "define (NV_TENSORRT|TRT)_(MAJOR|MINOR|PATCH)" "$TRT_INCLUDE/NvInferVersion.h" | head -3
  python3 -c "import torch; print('torch', torch.__version__)"; } 2>&1 | tee "$OUT/run.txt"

rm -rf "$WORK"; mkdir -p "$WORK"
# the case data is made on the CPU while the plugins build
( timeout 200 python3 $TESTS/make_w4_cases.py "$WORK/small" --set small > "$WORK/make_small.log" 2>&1
  timeout 260 python3 $TESTS/make_w4_cases.py "$WORK/model" --set model > "$WORK/make_model.log" 2>&1
  [ "$INT8_CASES" = 0 ] || timeout 120 python3 $TESTS/make_cases.py "$WORK/int8" --set small --jobs 2 \
      > "$WORK/make_int8.log" 2>&1 ) &
cases_pid=$!
timeout 300 bash $TESTS/build_harness.sh "$TRT_INCLUDE" "$SM" "$WORK/build" > "$WORK/build.log" 2>&1
rc=$?
log "build rc $rc"
if [ $rc -ne 0 ]; then
  grep -E "error" "$WORK/build.log" | head -40 | tee -a "$OUT/run.txt"; exit 1
fi

{ "$WORK/build/harness" selftest; "$WORK/build/w4_harness" selftest; } > "$OUT/selftest.txt" 2>/dev/null
log "selftests rc $?"; grep "selftest:" "$OUT/selftest.txt" | tee -a "$OUT/run.txt"

wait $cases_pid
log "cases made rc $? (small: $(ls "$WORK/small" | wc -l), model: $(ls "$WORK/model" | wc -l)," \
    "int8 small: $(ls "$WORK/int8" 2>/dev/null | wc -l))"

timeout 120 compute-sanitizer --tool memcheck --error-exitcode 3 "$WORK/build/w4_harness" run "$WORK"/small/* \
    > "$OUT/memcheck_w4.txt" 2>&1
log "memcheck rc $?"; tail -2 "$OUT/memcheck_w4.txt" | tee -a "$OUT/run.txt"
python3 $TESTS/check_w4_cases.py "$WORK"/small/* > "$OUT/check_small.txt" 2>&1
log "small cases compared rc $?"; tail -1 "$OUT/check_small.txt" | tee -a "$OUT/run.txt"

budget=$(( $(left) - (INT8_CASES ? 60 : 5) ))  # the rest is the int8 plugins' small set (step 5)
bounded "$budget" "$WORK/build/w4_harness" run "$WORK"/model/* > "$OUT/run_model.txt" 2>&1
log "model cases ran rc $? (${budget} s allowed)"
python3 $TESTS/check_w4_cases.py "$WORK"/model/* > "$OUT/check_model.txt" 2>&1
log "model cases compared rc $?"; grep -E "^FAIL" "$OUT/check_model.txt" | head -20 | tee -a "$OUT/run.txt"
tail -1 "$OUT/check_model.txt" | tee -a "$OUT/run.txt"

if [ "$INT8_CASES" = 1 ]; then
  budget=$(( $(left) - 5 ))
  { bounded "$budget" "$WORK/build/harness" run "$WORK"/int8/* && python3 $TESTS/check_cases.py "$WORK"/int8/* --jobs 4
    } > "$OUT/int8_cases.txt" 2>&1
  log "int8 plugin cases rc $?"; tail -2 "$OUT/int8_cases.txt" | tee -a "$OUT/run.txt"
fi
log "done"
