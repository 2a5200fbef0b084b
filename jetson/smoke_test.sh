#!/usr/bin/env bash
# Jetson smoke test (NEVER RUN: no Jetson was available): versions, the plugin library in TensorRT's registry,
# the plugin harness on the GPU, then export -> build-engine -> run on the demo model, one line each.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/edge-quamba-smoke}
PLUGINS=${EDGE_QUAMBA_TRT_PLUGINS:-build/trt/libedge_quamba_trt_plugins.so}
cat /etc/nv_tegra_release 2>/dev/null | head -1
python3 -c "import torch, tensorrt; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'TensorRT', tensorrt.__version__)"
python3 -c "
import tensorrt as trt
registry = trt.get_plugin_registry(); registry.load_library('$PLUGINS')
for name in ('Int8CausalConv1d', 'Int8SelectiveScan', 'HadamardQuantize'):
    assert registry.get_creator(name, '1', '') is not None, name
print('plugins registered')"
MAIN_SET=small SANITIZERS=0 plugins/tensorrt/tests/run_on_gpu.sh /usr/include/aarch64-linux-gnu 87 "$OUT/harness" \
    | tail -3
edge-quamba export --out "$OUT/export" --target tensorrt --calib-samples 16 --calib-seq-len 128 | tail -1
edge-quamba build-engine --model "$OUT/export" --out "$OUT/engine" --plugins "$PLUGINS" --max-prompt-len 512 | tail -1
edge-quamba run --model "$OUT/engine" --backend tensorrt --prompt "Once upon a time" --max-new-tokens 16 --temperature 0
echo "smoke test passed"
