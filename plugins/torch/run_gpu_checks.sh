#!/usr/bin/env bash
# The GPU machine's checks of the kernels, in one go (run from the repository root; logs into ${OUT:-gpu-out}):
# build the binding, the kernel tests, the timing table, compute-sanitizer memcheck + racecheck on every kernel
# (timeouts MEMCHECK_S / RACECHECK_S seconds; the timing runs before them so that a short device budget keeps it).
set -o pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MAX_JOBS=${MAX_JOBS:-16} EDGE_QUAMBA_CUDA_BUILD_DIR=${EDGE_QUAMBA_CUDA_BUILD_DIR:-/tmp/eq_cuda_ext}
export PATH=$PATH:/usr/local/cuda/bin
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nvcc --version | tail -1;
  python3 -c "import torch; print('torch', torch.__version__)"; } 2>&1 | tee "$OUT/gpu.txt"
start=$(date +%s)
python3 -c "from edge_quamba.ops import cuda_ops; cuda_ops.load_extension(verbose=True)" > "$OUT/build.log" 2>&1 \
  || { tail -40 "$OUT/build.log"; exit 1; }
echo "build: $(( $(date +%s) - start )) s" | tee -a "$OUT/gpu.txt"
python3 -m pytest -q -s -rs tests/test_cuda_kernels.py > "$OUT/cuda_kernel_tests.txt" 2>&1; echo "pytest rc $?"
grep -E "FAILED|Error|assert|passed|failed" "$OUT/cuda_kernel_tests.txt" | tail -30
python3 benchmarks/kernel_timing.py --out "$OUT/kernel_timing.json" 2>&1 | tee "$OUT/kernel_timing.txt"
PYTHONPATH=. timeout "${MEMCHECK_S:-240}" compute-sanitizer --tool memcheck python3 plugins/torch/sanitizer_smoke.py > "$OUT/memcheck.txt" 2>&1; echo "memcheck rc $?"; tail -3 "$OUT/memcheck.txt"
PYTHONPATH=. timeout "${RACECHECK_S:-150}" compute-sanitizer --tool racecheck python3 plugins/torch/sanitizer_smoke.py > "$OUT/racecheck.txt" 2>&1; echo "racecheck rc $?"; tail -3 "$OUT/racecheck.txt"
