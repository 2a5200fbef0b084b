#!/usr/bin/env bash
# One GPU-machine call for greedy decoding on the GPU (issue 20, step S1 of benchmarks/DECODE_PLAN.md; branch decode;
# run from the repository root, logs in $OUT). About 4-5 minutes on an H100; DEADLINE (seconds from the start, default
# 290) bounds the whole script, every step has its own timeout inside it, a failing step does not stop the next:
#   1. build the kernel binding (edge_quamba.ops.cuda_ops.load_extension),
#   2. pytest -m cuda tests/test_device_greedy.py (greedy choice on the GPU == the numpy sampler's, ties and NaN
#      included; device tokens == host tokens through the graph and eagerly; the host writes no token during graph
#      decode; demo and demo-mamba2: device == host == reference tokens) and tests/test_cuda_backend.py (the backend's
#      graph-decode tests and the demo model against the reference, which now runs greedy on the device),
#   3. benchmarks/bench_latency.py: Mamba1 130m and 2.8b, W8A8, random weights, batch 1, 512-token prompt, 128 new
#      tokens, 3 repeats, BOTH token choices on the same backend and GPU (device: the argmax inside the decode graph;
#      host: the path of the earlier records), printing TPOT, graph time, host time per token (= TPOT - graph) and
#      the copy bandwidth measured in the same run. Earlier host-path numbers for reference (H200):
#      benchmarks/results/latency_h200.csv (2.8b TPOT 2.944 ms, graph 2.522 ms: 0.42 ms host per token).
# Files under $OUT: run.txt (GPU, versions, progress, summary), build.txt, cuda_tests.txt, bench.log,
# latency_decode_greedy.{json,csv,png}.
set -o pipefail
OUT=${OUT:-gpu-out}
DEADLINE=${DEADLINE:-290}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD HF_HUB_OFFLINE=1 PATH=$PATH:/usr/local/cuda/bin MAX_JOBS=${MAX_JOBS:-16}
export EDGE_QUAMBA_CUDA_BUILD_DIR=${EDGE_QUAMBA_CUDA_BUILD_DIR:-/tmp/eq_cuda_ext}
t0=$(date +%s)
elapsed() { echo $(( $(date +%s) - t0 )); }
left() { echo $(( DEADLINE - $(date +%s) + t0 )); }
log() { echo "[$(elapsed) s] $*" | tee -a "$OUT/run.txt"; }

{ date -u; git log --oneline -1; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  nvcc --version | tail -1; nproc
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } 2>&1 | tee "$OUT/run.txt"

timeout 120 python3 -c "from edge_quamba.ops import cuda_ops; cuda_ops.load_extension(verbose=True)" \
    > "$OUT/build.txt" 2>&1
rc=$?
log "binding build rc $rc"
if [ $rc -ne 0 ]; then
  grep -E "error|Error" "$OUT/build.txt" | head -40 >> "$OUT/run.txt"; tail -40 "$OUT/build.txt"; exit 1
fi

budget=$(( $(left) - 75 ))
log "cuda tests with ${budget} s"
timeout "$budget" python3 -m pytest -q -s -rs -m cuda tests/test_device_greedy.py tests/test_cuda_backend.py \
    > "$OUT/cuda_tests.txt" 2>&1
log "cuda tests rc $?"
grep -E "^FAILED|^ERROR| passed| failed|TPOT host path|Timeout" "$OUT/cuda_tests.txt" | tail -25 | tee -a "$OUT/run.txt"

budget=$(( $(left) - 3 ))
log "bench_latency.py with ${budget} s"
timeout "$budget" python3 benchmarks/bench_latency.py --shapes 130m,2.8b --impls edge-quamba --token-choice both \
    --repeats 3 --no-profile --out "$OUT" --name latency_decode_greedy > "$OUT/bench.log" 2>&1
log "bench rc $?"
grep -E "copy bandwidth" "$OUT/bench.log" | tee -a "$OUT/run.txt"
grep -A6 "^shape" "$OUT/bench.log" | tee -a "$OUT/run.txt"
