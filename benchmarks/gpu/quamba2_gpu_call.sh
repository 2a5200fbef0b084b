#!/usr/bin/env bash
# Issues 19 and 20's GPU work in one device call (run from the repository root; everything comes back in
# $OUT/bundle.tgz, one folder or log per job).
#   Phase 1, correctness, the jobs side by side (they share the GPU; nothing is timed then):
#     - ext -> tests: build our torch extension, then the cuda tests (pytest -m cuda $TESTS, timeout TESTS_S;
#       device greedy and the cuda backend first, so that a cut-off run has them), then (SMOKE=1, the default)
#       compute-sanitizer memcheck over plugins/torch/sanitizer_smoke{,_mamba2,_int4}.py and racecheck over
#       sanitizer_smoke.py (every kernel of the torch binding on odd shapes; SMOKE_S each)
#     - harness: the TensorRT plugins' harness (plugins/tensorrt/tests/run_on_gpu.sh) over HARNESS_SET (model: the
#       ops at model sizes; small: with the compute-sanitizer stages, SANITIZERS=1), DEADLINE HARNESS_S
#     - trtw4: the 4-bit plugins' harness (benchmarks/gpu/trt_w4_plugins.sh: small set under memcheck, model set),
#       DEADLINE W4_S (its int8 small set is left to the harness job)
#     - the mamba_ssm baseline's build (build_mamba_ssm.sh, .sdists carried) when LATENCY_IMPLS names mamba_ssm
#   Phase 2, timing, alone on the GPU once phase 1 is over: bench_latency.py over SHAPES x LATENCY_IMPLS with both
#   token choices (the greedy token chosen on the GPU, and on the host as the earlier records did), timeout
#   LATENCY_S; each row is printed as a JSON line as it finishes and the JSON/CSV are rewritten after each shape, so a
#   cut-off run keeps its finished shapes. LATENCY=0 skips it. PROFILE=1 then adds, still alone on the GPU: Nsight
#   Compute over one eager call of each kernel of benchmarks/kernel_timing.py (--profile-once; the l = 1 kernels come
#   first, PROFILE_LAUNCHES of them), and kernel_timing.py $KERNEL_TIMING_ARGS (default --int4-only: the 4-bit
#   linears timed in CUDA graphs; KERNEL_TIMING_ARGS= times every kernel of a 2.8b layer and the chains).
#   BASELINE_KERNELS=DIR (a carried folder of plugins/kernels files, e.g. the files a change replaced, from git show):
#   phase 1 also builds a copy of the tree with those files in place, and PROFILE=1 times the 4-bit linears with it
#   too (kernel_timing_baseline.json beside kernel_timing.json): the before and after of a kernel change in one run
#   (benchmarks/kernel_timing_ab.py makes the table).
# Knobs (defaults): JOBS (tests harness trtw4: which phase-1 jobs run; JOBS= runs none), TESTS (tests/test_device_greedy.py
#   tests/test_cuda_backend.py tests/), TESTS_S (240), SMOKE (1), SMOKE_S (60), HARNESS_SET (model), HARNESS_S (200), SANITIZERS (1),
#   SANITIZE_S (80), W4_S (220), LATENCY (1), PROFILE (0), PROFILE_NCU (1; 0: no ncu), PROFILE_S (150 per profiling command), PROFILE_LAUNCHES (24),
#   SHAPES (m2-2.7b,2.8b,130m,370m,1.4b,m2-130m), LATENCY_IMPLS (edge-quamba,edge-quamba-w4a8,edge-quamba-w4a16,
#   mamba_ssm), LATENCY_S (260, per prefill mode), PREFILL (graphs, the cuda backend's default; eager: one forward;
#   bench_latency --prefill; a comma list such as graphs,eager times each mode in turn, alone on the GPU).
#   PDL (default: the backend's default; 0 or 1: EDGE_QUAMBA_PDL for the latency runs; 0,1 times both in turn).
#   FUSED (default: the fused decode ops; 0 or 1: EDGE_QUAMBA_FUSED_DECODE, 0 keeps the separate ops; 0,1 both).
# Carry: third_party/tensorrt-10.3, third_party/tensorrt-main, .sdists.
set -u
OUT=${OUT:-gpu-out}
B=/tmp/bundle
rm -rf "$B" && mkdir -p "$B" "$OUT"
export PYTHONPATH=$PWD EDGE_QUAMBA_CUDA_BUILD_DIR=$PWD/build/eq_cuda_ext PYTHONUNBUFFERED=1
TESTS=${TESTS:-tests/test_device_greedy.py tests/test_cuda_backend.py tests/}
LATENCY=${LATENCY:-1}
SHAPES=${SHAPES:-m2-2.7b,2.8b,130m,370m,1.4b,m2-130m}
LATENCY_IMPLS=${LATENCY_IMPLS:-edge-quamba,edge-quamba-w4a8,edge-quamba-w4a16,mamba_ssm}
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*" | tee -a "$B/calls.txt"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } | tee "$B/machine.txt"

# the archive every 20 s, so that a call cut off by its time limit still brings back what was done
( while sleep 20; do tar czf "$OUT/bundle.tgz.part" -C /tmp bundle 2>/dev/null && mv "$OUT/bundle.tgz.part" "$OUT/bundle.tgz"; done ) &
archiver=$!

# job NAME COMMAND: run COMMAND in the background with OUT=$B/NAME, its output in $B/NAME.log
pids=()
job() {
  local name=$1 cmd=$2
  mkdir -p "$B/$name"
  ( start=$(date +%s); OUT=$B/$name bash -c "$cmd" > "$B/$name.log" 2>&1
    stamp "$name: rc $? in $(( $(date +%s) - start )) s" ) &
  pids+=($!)
}

# pytest -q prints F at once but the failure's text only at the end: -x would hide the rest, so a junit file keeps
# every result even when the timeout cuts the run
JOBS=" ${JOBS-tests harness trtw4} "  # unset: all three; empty: none
SMOKE_S=${SMOKE_S:-60}
SMOKE_CMD="for smoke in sanitizer_smoke sanitizer_smoke_mamba2 sanitizer_smoke_int4; do
             timeout $SMOKE_S compute-sanitizer --tool memcheck --error-exitcode 3 python3 plugins/torch/\$smoke.py \
               > \$OUT/memcheck_\$smoke.txt 2>&1; echo \"memcheck \$smoke rc \$?\"; done
           timeout $SMOKE_S compute-sanitizer --tool racecheck --error-exitcode 3 python3 plugins/torch/sanitizer_smoke.py \
             > \$OUT/racecheck_sanitizer_smoke.txt 2>&1; echo \"racecheck sanitizer_smoke rc \$?\""
[[ $JOBS == *" tests "* ]] && job tests "python3 -c 'from edge_quamba.ops.cuda_ops import load_extension; load_extension()' > \$OUT/extension_build.log 2>&1 &&
           { timeout ${TESTS_S:-240} python3 -m pytest -q -rfEs --tb=short -m cuda --junitxml=\$OUT/cuda_tests.xml $TESTS;
             echo \"pytest rc \$?\"; [ \"${SMOKE:-1}\" = 1 ] && { $SMOKE_CMD; }; true; }"
[[ $JOBS == *" harness "* ]] && job harness "TRT_INCLUDE_2= MAIN_SET=${HARNESS_SET:-model} DEADLINE=${HARNESS_S:-200} SANITIZERS=${SANITIZERS:-1} \
             SANITIZE_S=${SANITIZE_S:-80} bash plugins/tensorrt/tests/run_on_gpu.sh"
[[ $JOBS == *" trtw4 "* ]] && job trtw4 "INT8_CASES=0 DEADLINE=${W4_S:-220} bash benchmarks/gpu/trt_w4_plugins.sh"
BASE=/tmp/baseline_tree
if [ -n "${BASELINE_KERNELS:-}" ]; then
  job baseline_build "rm -rf $BASE && mkdir -p $BASE && cp -r edge_quamba plugins benchmarks $BASE/ &&
                      cp $BASELINE_KERNELS/* $BASE/plugins/kernels/ && cd $BASE &&
                      PYTHONPATH=$BASE python3 -c 'from edge_quamba.ops.cuda_ops import load_extension; load_extension()'"
fi
if [ "$LATENCY" = 1 ] && [[ ",$LATENCY_IMPLS," == *",mamba_ssm,"* ]]; then
  job mamba_ssm_build "bash benchmarks/gpu/build_mamba_ssm.sh"
fi
wait "${pids[@]}"

PREFILL=${PREFILL:-graphs}
PDL=${PDL:-default}
FUSED=${FUSED:-default}
if [ "$LATENCY" = 1 ]; then
  mkdir -p "$B/latency"
  for fused in ${FUSED//,/ }; do  # one run per (fused decode ops, PDL, prefill mode); each record's name says which
    for pdl in ${PDL//,/ }; do
      for prefill in ${PREFILL//,/ }; do
        name=latency_quamba2; log=latency
        [[ $PREFILL == *,* ]] && name=${name}_prefill_$prefill && log=${log}_prefill_$prefill
        [[ $PDL == *,* ]] && name=${name}_pdl$pdl && log=${log}_pdl$pdl
        [[ $FUSED == *,* ]] && name=${name}_fused$fused && log=${log}_fused$fused
        stamp "latency (prefill $prefill, PDL $pdl, fused $fused): start"
        ( [ "$pdl" != default ] && export EDGE_QUAMBA_PDL=$pdl
          [ "$fused" != default ] && export EDGE_QUAMBA_FUSED_DECODE=$fused
          timeout "${LATENCY_S:-260}" python3 benchmarks/bench_latency.py --shapes "$SHAPES" --repeats 2 \
            --impls "$LATENCY_IMPLS" --out "$B/latency" --token-choice both --prefill "$prefill" --name "$name" \
            > "$B/$log.log" 2>&1 )
        stamp "latency (prefill $prefill, PDL $pdl, fused $fused): rc $?"
      done
    done
  done
fi
if [ "${PROFILE:-0}" = 1 ] && [ "${PROFILE_NCU:-1}" = 1 ]; then
  stamp "profile: start"
  timeout "${PROFILE_S:-150}" ncu --clock-control none --launch-count "${PROFILE_LAUNCHES:-24}" \
      -k 'regex:^(w4a|int8_gemv|int32_epilogue|hadamard|selective|causal|rms_norm|gated_rms|quantize|ssd)' \
      --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy --section LaunchStats \
      --section WarpStateStats --section SchedulerStats --section ComputeWorkloadAnalysis \
      python3 benchmarks/kernel_timing.py --profile-once > "$B/ncu_l1.txt" 2>&1
  stamp "profile ncu: rc $?"
fi
KT_ARGS=${KERNEL_TIMING_ARGS---int4-only}
if [ "${PROFILE:-0}" = 1 ]; then
  timeout "${PROFILE_S:-150}" python3 benchmarks/kernel_timing.py $KT_ARGS --out "$B/kernel_timing.json" \
      > "$B/kernel_timing.log" 2>&1
  stamp "profile kernel_timing $KT_ARGS: rc $?"
  if [ -n "${BASELINE_KERNELS:-}" ]; then
    (cd $BASE && PYTHONPATH=$BASE timeout "${PROFILE_S:-150}" python3 benchmarks/kernel_timing.py $KT_ARGS \
        --out "$B/kernel_timing_baseline.json" > "$B/kernel_timing_baseline.log" 2>&1)
    stamp "profile kernel_timing $KT_ARGS, baseline kernels: rc $?"
  fi
fi
for name in $JOBS; do echo "=== $name"; tail -12 "$B/$name.log"; done
cat "$B/calls.txt"
kill "$archiver"
tar czf "$OUT/bundle.tgz" -C /tmp bundle
