#!/usr/bin/env bash
# One GPU-machine call for the CUDA side of --backend tensorrt (branch trtrt; run from the repository root; logs in
# $OUT): edge_quamba/runtime/cuda_device.py against the REAL cuda-python on a real GPU (tests/test_cuda_device.py:
# pinned copies, memset, a CUDA graph captured from the stream and replayed, events, a failing capture), next to the
# same tests on the fake that tests/test_tensorrt_runtime.py uses. TensorRT is not involved (not installed there).
# The GPU machine has no network: first, on the workstation,
#     pip download 'cuda-python>=12.6.1,<13' -d third_party/wheels      (git-ignored; about 8 MB, CPython 3.11 x86_64)
# then run this with carry ["third_party/wheels"]. Files under $OUT: gpu.txt, cuda_device_tests.txt.
set -o pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD HF_HUB_OFFLINE=1
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; python3 --version
  ls third_party/wheels; } > "$OUT/gpu.txt" 2>&1
python3 -m venv --system-site-packages /tmp/eq_cudapy >> "$OUT/gpu.txt" 2>&1 \
  && /tmp/eq_cudapy/bin/pip install -q --no-index third_party/wheels/*.whl >> "$OUT/gpu.txt" 2>&1 \
  && /tmp/eq_cudapy/bin/python -c "import cuda.bindings; print('cuda-bindings', cuda.bindings.__version__)" \
     >> "$OUT/gpu.txt" 2>&1 || { cat "$OUT/gpu.txt"; echo "cuda-python did not install"; exit 1; }
cat "$OUT/gpu.txt"
timeout 300 /tmp/eq_cudapy/bin/python -m pytest -q -s -rA tests/test_cuda_device.py > "$OUT/cuda_device_tests.txt" 2>&1
echo "cuda_device tests rc $?"; grep -E "PASSED|SKIPPED|FAILED|Error|passed|failed|replay" "$OUT/cuda_device_tests.txt" | tail -20
