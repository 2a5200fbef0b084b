#!/usr/bin/env bash
# One GPU-machine call for the cuda backend and the latency benchmark (run from the repository root; logs in $OUT):
#   1. builds mamba_ssm for sm_90 in the background (benchmarks/gpu/build_mamba_ssm.sh, needs .sdists/),
#   2. builds the kernel binding (edge_quamba.ops.cuda_ops.load_extension),
#   3. runs the cuda-marked tests of the backend (tests/test_cuda_backend.py),
#   4. waits for mamba_ssm, then runs benchmarks/bench_latency.py (smallest and largest shapes first, so that a
#      run cut short by the deadline still has both; the JSON/CSV/PNG are rewritten after every shape).
# DEADLINE (seconds from the start, default 420) bounds the whole script: each step gets a timeout inside it.
# Files under $OUT: build_mamba_ssm.log, build_kernels.log, tests.log, bench.log, latency_h200.{json,csv,png}.
set -o pipefail
OUT=${OUT:-gpu-out}
DEADLINE=${DEADLINE:-420}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD HF_HUB_OFFLINE=1 PATH=$PATH:/usr/local/cuda/bin
export EDGE_QUAMBA_CUDA_BUILD_DIR=${EDGE_QUAMBA_CUDA_BUILD_DIR:-/tmp/eq_cuda_ext}
t0=$(date +%s)
elapsed() { echo $(( $(date +%s) - t0 )); }
left() { echo $(( DEADLINE - $(date +%s) + t0 )); }

{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv,noheader
  nvcc --version | tail -1; nproc
  python3 -c "import torch, transformers, triton; print('torch', torch.__version__, 'transformers',
transformers.__version__, 'triton', triton.__version__)"; } 2>&1 | tee "$OUT/bench.log"

MAX_JOBS=12 timeout 300 bash benchmarks/gpu/build_mamba_ssm.sh > "$OUT/build_mamba_ssm.log" 2>&1 &
ssm=$!

MAX_JOBS=8 timeout 240 python3 -c "from edge_quamba.ops import cuda_ops; cuda_ops.load_extension(verbose=True)" \
    > "$OUT/build_kernels.log" 2>&1
echo "[$(elapsed) s] kernel binding build rc $?"; tail -2 "$OUT/build_kernels.log"

timeout 180 python3 -m pytest -q -s -rs -m cuda tests/test_cuda_backend.py > "$OUT/tests.log" 2>&1
echo "[$(elapsed) s] cuda tests rc $?"; grep -E "max abs diff|passed|failed|FAILED|Error" "$OUT/tests.log" | tail -20

wait $ssm
echo "[$(elapsed) s] mamba_ssm build rc $?"; tail -3 "$OUT/build_mamba_ssm.log"

budget=$(( $(left) - 5 ))
echo "[$(elapsed) s] bench_latency.py with ${budget} s left"
timeout "$budget" python3 benchmarks/bench_latency.py --shapes 130m,2.8b,370m,1.4b --out "$OUT" 2>&1 \
    | tee -a "$OUT/bench.log"
echo "[$(elapsed) s] bench rc $?"
