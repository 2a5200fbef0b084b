#!/usr/bin/env bash
# The whole GPU verification of a tree in one device call (run from the repository root; results in $OUT):
# mamba_ssm built in the background (for the latency comparison), the kernel binding built, every cuda-marked test
# (kernels and backend), compute-sanitizer memcheck and racecheck on every kernel, then bench_latency.py on the four
# shapes. DEADLINE (s) bounds the whole script. Files under $OUT (at most 8 come back from the device tool):
# gpu.txt, cuda_tests.txt, memcheck.txt, racecheck.txt, bench.log, latency_h200.{json,csv,png}.
set -o pipefail
OUT=${OUT:-gpu-out}
DEADLINE=${DEADLINE:-560}
mkdir -p "$OUT" /tmp/eq_logs
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD HF_HUB_OFFLINE=1 PATH=$PATH:/usr/local/cuda/bin
export EDGE_QUAMBA_CUDA_BUILD_DIR=/tmp/eq_cuda_ext
t0=$(date +%s)
elapsed() { echo $(( $(date +%s) - t0 )); }
left() { echo $(( DEADLINE - $(date +%s) + t0 )); }
{ date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nvcc --version | tail -1
  python3 -c "import torch; print('torch', torch.__version__)"; } > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"

MAX_JOBS=8 timeout 300 bash benchmarks/gpu/build_mamba_ssm.sh > /tmp/eq_logs/mamba_ssm.log 2>&1 &
ssm=$!
MAX_JOBS=8 timeout 240 python3 -c "from edge_quamba.ops import cuda_ops; cuda_ops.load_extension()" \
    > /tmp/eq_logs/binding.log 2>&1 || { echo "binding build failed"; tail -30 /tmp/eq_logs/binding.log; }
echo "[$(elapsed) s] binding built"
timeout 240 python3 -m pytest -q -s -rs -m cuda tests/test_cuda_kernels.py tests/test_cuda_backend.py \
    > "$OUT/cuda_tests.txt" 2>&1
echo "[$(elapsed) s] cuda tests rc $?"; grep -E "FAILED|passed|failed" "$OUT/cuda_tests.txt" | tail -12
timeout 90 compute-sanitizer --tool memcheck python3 plugins/torch/sanitizer_smoke.py > "$OUT/memcheck.txt" 2>&1
echo "[$(elapsed) s] memcheck rc $?"; tail -2 "$OUT/memcheck.txt"
timeout 90 compute-sanitizer --tool racecheck python3 plugins/torch/sanitizer_smoke.py > "$OUT/racecheck.txt" 2>&1
echo "[$(elapsed) s] racecheck rc $?"; tail -2 "$OUT/racecheck.txt"
wait $ssm; echo "[$(elapsed) s] mamba_ssm build rc $?"; tail -2 /tmp/eq_logs/mamba_ssm.log
budget=$(( $(left) - 5 ))
echo "[$(elapsed) s] bench_latency.py with ${budget} s left"
timeout "$budget" python3 benchmarks/bench_latency.py --shapes 130m,2.8b,370m,1.4b --out "$OUT" > "$OUT/bench.log" 2>&1
echo "[$(elapsed) s] bench rc $?"; tail -45 "$OUT/bench.log"
