#!/usr/bin/env bash
# Jetson smoke test, the default command of both images (NEVER RUN: no Jetson was available). One line each:
# versions; in the full image the plugin harness on the GPU and an export of the demo model; then build-engine and
# run --backend tensorrt. The slim image has no torch, hence no export: give it an export folder made on the
# workstation (export/Dockerfile) as EXPORT, and it checks first that the TensorRT path imports without torch.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/edge-quamba-smoke}
PLUGINS=${EDGE_QUAMBA_TRT_PLUGINS:-build/trt/libedge_quamba_trt_plugins.so}
head -1 /etc/nv_tegra_release 2>/dev/null || echo "no /etc/nv_tegra_release"
python3 -c "import tensorrt; print('TensorRT', tensorrt.__version__)"
rm -rf "$OUT/engine"
if python3 -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is None)"; then
    python3 -c "import torch; print('torch', torch.__version__, 'on', torch.cuda.get_device_name())"
    MAIN_SET=small SANITIZERS=0 plugins/tensorrt/tests/run_on_gpu.sh /usr/include/aarch64-linux-gnu 87 \
        "$OUT/harness" | tail -3
    rm -rf "$OUT/export"
    edge-quamba export --out "$OUT/export" --target tensorrt --calib-samples 16 --calib-seq-len 128 | tail -1
    EXPORT=$OUT/export
else
    : "${EXPORT:?the slim image has no torch to export with: mount an export folder (export/Dockerfile) and set EXPORT}"
    python3 -c "import sys; sys.modules['torch'] = None; import edge_quamba.runtime.tensorrt_engine" \
        || { echo "smoke_test.sh: the TensorRT path still imports torch (issue 18, item 6)" >&2; exit 1; }
fi
edge-quamba build-engine --model "$EXPORT" --out "$OUT/engine" --plugins "$PLUGINS" --max-prompt-len 512 | tail -1
edge-quamba run --model "$OUT/engine" --backend tensorrt --prompt "Once upon a time" --max-new-tokens 16 --temperature 0
echo "smoke test passed"
