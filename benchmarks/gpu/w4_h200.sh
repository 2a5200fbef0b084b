#!/usr/bin/env bash
# One GPU-machine call for the 4-bit-weight CUDA kernels (branch w4cuda; run from the repository root; logs in $OUT):
#   1. build the kernel binding (edge_quamba.ops.cuda_ops.load_extension),
#   2. tests/test_cuda_int4.py (every 4-bit kernel and W4A16's scan against the reference, the cuda backend at W4A8
#      and W4A16: graph decode vs prefill, graph vs eager, greedy tokens of the demo model) and the W8A8 int8_linear
#      and backend tests of tests/test_cuda_kernels.py / tests/test_cuda_backend.py (their binding and ops changed),
#   3. compute-sanitizer memcheck on plugins/torch/sanitizer_smoke_int4.py (every 4-bit kernel path, odd shapes),
#   4. benchmarks/bench_latency.py: Mamba1 2.8b at W8A8, W4A8 and W4A16 (random weights, batch 1, 512-token prompt,
#      128 new tokens, 3 repeats), with the per-kernel decode table,
#   5. benchmarks/kernel_timing.py --int4-only (the 4-bit linears alone at the 2.8b shapes, GB/s vs copy), if time is
#      left.
# DEADLINE (seconds from the start, default 345) bounds the whole script; each step has its own timeout inside it.
# Files under $OUT (8): run.txt (GPU, versions, progress, build errors), cuda_int4_tests.txt, memcheck_int4.txt,
# bench_w4.log, latency_w4_h200.{json,csv,png}, kernel_timing_int4.json.
set -o pipefail
OUT=${OUT:-gpu-out}
DEADLINE=${DEADLINE:-345}
mkdir -p "$OUT" /tmp/eq_logs
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD HF_HUB_OFFLINE=1 PATH=$PATH:/usr/local/cuda/bin
export EDGE_QUAMBA_CUDA_BUILD_DIR=${EDGE_QUAMBA_CUDA_BUILD_DIR:-/tmp/eq_cuda_ext}
t0=$(date +%s)
elapsed() { echo $(( $(date +%s) - t0 )); }
left() { echo $(( DEADLINE - $(date +%s) + t0 )); }
log() { echo "[$(elapsed) s] $*" | tee -a "$OUT/run.txt"; }

{ date -u; git log --oneline -1; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  nvcc --version | tail -1; nproc
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } 2>&1 | tee "$OUT/run.txt"

MAX_JOBS=16 timeout 200 python3 -c "from edge_quamba.ops import cuda_ops; cuda_ops.load_extension(verbose=True)" \
    > /tmp/eq_logs/build.log 2>&1
rc=$?
log "binding build rc $rc"
if [ $rc -ne 0 ]; then
  grep -E "error|Error" /tmp/eq_logs/build.log | head -40 >> "$OUT/run.txt"; tail -40 /tmp/eq_logs/build.log; exit 1
fi

timeout 150 python3 -m pytest -q -s -rs -m cuda tests/test_cuda_int4.py tests/test_cuda_backend.py \
    "tests/test_cuda_kernels.py::test_int8_linear_exact" \
    "tests/test_cuda_kernels.py::test_int8_linear_quantize_exact" > "$OUT/cuda_int4_tests.txt" 2>&1
log "cuda tests rc $?"
grep -E "^FAILED|^ERROR| passed| failed|Timeout" "$OUT/cuda_int4_tests.txt" | tail -25 | tee -a "$OUT/run.txt"

timeout 60 compute-sanitizer --tool memcheck --error-exitcode 3 python3 plugins/torch/sanitizer_smoke_int4.py \
    > "$OUT/memcheck_int4.txt" 2>&1
log "memcheck rc $?"; tail -3 "$OUT/memcheck_int4.txt" | tee -a "$OUT/run.txt"

budget=$(( $(left) - 45 ))
log "bench_latency.py with ${budget} s"
timeout "$budget" python3 benchmarks/bench_latency.py --shapes 2.8b \
    --impls edge-quamba,edge-quamba-w4a8,edge-quamba-w4a16 --repeats 3 --out "$OUT" --name latency_w4_h200 \
    > "$OUT/bench_w4.log" 2>&1
log "bench rc $?"; grep -B1 -A4 "^shape" "$OUT/bench_w4.log" | tee -a "$OUT/run.txt"

budget=$(( $(left) - 3 ))
if [ "$budget" -gt 15 ]; then
  timeout "$budget" python3 benchmarks/kernel_timing.py --int4-only --out "$OUT/kernel_timing_int4.json" \
      >> "$OUT/run.txt" 2>&1
  log "kernel timing rc $?"
else
  log "kernel timing skipped (${budget} s left)"
fi
