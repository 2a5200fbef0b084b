#!/usr/bin/env bash
# One GPU-machine call for the per-token out_proj scale (branch dynscale; run from the repository root; logs in $OUT):
# build the kernel binding, run tests/test_cuda_dynamic_scale.py and the static Hadamard / int8_linear kernel tests
# of tests/test_cuda_kernels.py (the kernels the dynamic variant changed), then benchmarks/dynscale_timing.py.
# Files under $OUT: gpu.txt, build.txt, cuda_tests.txt, timing.txt, dynscale_timing_h200.json.
set -o pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD HF_HUB_OFFLINE=1 PATH=$PATH:/usr/local/cuda/bin MAX_JOBS=${MAX_JOBS:-16}
export EDGE_QUAMBA_CUDA_BUILD_DIR=${EDGE_QUAMBA_CUDA_BUILD_DIR:-/tmp/eq_cuda_ext}
t0=$(date +%s)
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nvcc --version | tail -1
  python3 -c "import torch; print('torch', torch.__version__)"; } > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"
timeout 150 python3 -c "from edge_quamba.ops import cuda_ops; cuda_ops.load_extension()" > "$OUT/build.txt" 2>&1 \
  || { echo "binding build failed"; tail -40 "$OUT/build.txt"; exit 1; }
echo "[$(( $(date +%s) - t0 )) s] binding built"
timeout 120 python3 -m pytest -q -s -rs tests/test_cuda_dynamic_scale.py tests/test_cuda_kernels.py \
  -k "dynamic or per_token or hadamard or int8_linear or dispatch" > "$OUT/cuda_tests.txt" 2>&1
echo "[$(( $(date +%s) - t0 )) s] cuda tests rc $?"; grep -E "FAILED|Error|passed|failed" "$OUT/cuda_tests.txt" | tail -15
timeout 90 python3 benchmarks/dynscale_timing.py --out "$OUT/dynscale_timing_h200.json" 2>&1 | tee "$OUT/timing.txt"
echo "[$(( $(date +%s) - t0 )) s] done"
