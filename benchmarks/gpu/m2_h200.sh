#!/usr/bin/env bash
# One GPU-machine call for the Mamba2 (Quamba2) CUDA kernels (branch m2cuda; run from the repository root, logs in
# $OUT). Expected ~6 min on an H100/H200 with the binding not yet built; every step has a timeout (at most 580 s in
# all) and a failing step does not stop the next:
#   1. build the torch binding (every plugins/kernels/*.cu),
#   2. tests/test_cuda_mamba2.py: each Mamba2 kernel against the quantized reference, CUDA-graph decode == prefill,
#      the demo-mamba2 greedy tokens at W8A8, W4A8 and W4A16,
#   3. regressions of the kernels this branch touched (tests/test_cuda_kernels.py: conv, Hadamard, RMSNorm) and the
#      Mamba1 graph-decode tests of tests/test_cuda_backend.py,
#   4. compute-sanitizer memcheck on plugins/torch/sanitizer_smoke_mamba2.py,
#   5. benchmarks/bench_latency.py's Mamba2 rows (m2-130m, m2-2.7b; edge-quamba W8A8 / W4A8 / W4A16, and mamba_ssm's
#      Mamba2 fp16 when installed by benchmarks/gpu/build_mamba_ssm.sh in an earlier call, else "not installed").
# Files under $OUT: gpu.txt, build.txt, cuda_mamba2_tests.txt, cuda_regression_tests.txt, memcheck.txt,
# latency_mamba2.{json,csv,png,txt}. LATENCY=0 skips step 5 (e.g. while mamba_ssm still builds).
set -o pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD HF_HUB_OFFLINE=1 PATH=$PATH:/usr/local/cuda/bin MAX_JOBS=${MAX_JOBS:-16}
export EDGE_QUAMBA_CUDA_BUILD_DIR=${EDGE_QUAMBA_CUDA_BUILD_DIR:-/tmp/eq_cuda_ext}
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nvcc --version | tail -1
  python3 -c "import torch; print('torch', torch.__version__)"
  python3 -c "import mamba_ssm; print('mamba_ssm', mamba_ssm.__version__)" 2>/dev/null || echo "mamba_ssm not installed"
  git log --oneline -1; } > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"

timeout 100 python3 -c "from edge_quamba.ops import cuda_ops; cuda_ops.load_extension(verbose=True)" \
  > "$OUT/build.txt" 2>&1 || { stamp "binding build FAILED"; tail -40 "$OUT/build.txt"; exit 1; }
stamp "binding built"

timeout 180 python3 -m pytest -q -s -rs tests/test_cuda_mamba2.py > "$OUT/cuda_mamba2_tests.txt" 2>&1
stamp "Mamba2 cuda tests rc $?"; grep -E "FAILED|Error|passed|failed|SKIPPED" "$OUT/cuda_mamba2_tests.txt" | tail -20

timeout 50 python3 -m pytest -q -s -rs tests/test_cuda_kernels.py tests/test_cuda_backend.py \
  -k "causal_conv1d or hadamard_quantize_exact or row_strided or rms_norm or graph" \
  > "$OUT/cuda_regression_tests.txt" 2>&1
stamp "regression cuda tests rc $?"; grep -E "FAILED|Error|passed|failed" "$OUT/cuda_regression_tests.txt" | tail -12

timeout 120 compute-sanitizer --tool memcheck python3 plugins/torch/sanitizer_smoke_mamba2.py > "$OUT/memcheck.txt" 2>&1
stamp "memcheck rc $?"; tail -3 "$OUT/memcheck.txt"

[ "${LATENCY:-1}" = 0 ] && { stamp "latency skipped (LATENCY=0)"; exit 0; }
timeout 130 python3 benchmarks/bench_latency.py --shapes m2-130m,m2-2.7b --repeats 2 \
  --impls edge-quamba,edge-quamba-w4a8,edge-quamba-w4a16,mamba_ssm --out "$OUT" --name latency_mamba2 \
  > "$OUT/latency_mamba2.txt" 2>&1
stamp "Mamba2 latency rc $?"; grep -vE '^\{' "$OUT/latency_mamba2.txt" | tail -60
