#!/usr/bin/env bash
# Build the plugins and the harness for one GPU, run every case through the plugins' own interfaces, compare with
# the quantized reference, print the table. Needs nvcc, g++, Python with torch and this package; no TensorRT
# libraries (headers only).
#
#   plugins/tensorrt/tests/run_on_gpu.sh [TRT_INCLUDE_DIR] [SM] [WORK_DIR]
#
#   TRT_INCLUDE_DIR  default: third_party/tensorrt-10.3/include of this checkout (ignored by git; see the README)
#   SM               default: 90 (H100/H200); 87 on Jetson Orin
#   WORK_DIR         default: /tmp/edge_quamba_trt_harness (cases, build, outputs)
set -euo pipefail

TESTS=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$TESTS/../../.." && pwd)
TRT_INCLUDE=${1:-$REPO/third_party/tensorrt-10.3/include}
SM=${2:-90}
WORK=${3:-/tmp/edge_quamba_trt_harness}

echo "== $(date -u +%Y-%m-%dT%H:%M:%SZ)  $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi')"
echo "== TensorRT headers: $(grep -h -m3 -E 'define (NV_TENSORRT_(MAJOR|MINOR|PATCH)|TRT_(MAJOR|MINOR|PATCH)_ENTERPRISE) ' "$TRT_INCLUDE/NvInferVersion.h" | awk '{print $2"="$3}' | tr '\n' ' ')"
rm -rf "$WORK"
"$TESTS/build_harness.sh" "$TRT_INCLUDE" "$SM" "$WORK/build"
python3 "$TESTS/make_cases.py" "$WORK/cases" > /dev/null
echo "== harness selftest (host-side interface checks)"
"$WORK/build/harness" selftest 2> "$WORK/selftest.stderr"
echo "== harness run (enqueue on the GPU)"
"$WORK/build/harness" run "$WORK"/cases/*
echo "== comparison with edge_quamba.quant.qops"
python3 "$TESTS/check_cases.py" "$WORK"/cases/*
