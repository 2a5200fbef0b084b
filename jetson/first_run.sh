#!/usr/bin/env bash
# ENTRYPOINT of both Jetson images (NEVER RUN: no Jetson was available). The GPU steps that `docker build` leaves out
# (it runs without the NVIDIA runtime), done when a container starts, then the command:
#   1. TensorRT loads (needs `docker run --runtime nvidia`), the plugin library matches its recorded sha256 and
#      registers the three edge-quamba creators;
#   2. full image only (torch installed): the torch binding of the CUDA kernels is built for sm_87 into
#      $EDGE_QUAMBA_CUDA_BUILD_DIR, once (mount a volume there to keep it across containers).
# A marker in $EDGE_QUAMBA_STATE skips both on later starts of the same container; EDGE_QUAMBA_SKIP_FIRST_RUN=1 skips
# them too (a shell in a container started without the NVIDIA runtime, to look around).
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=${EDGE_QUAMBA_STATE:-/var/lib/edge-quamba}
PLUGINS=${EDGE_QUAMBA_TRT_PLUGINS:-/opt/edge-quamba/lib/libedge_quamba_trt_plugins.so}
if [ "${EDGE_QUAMBA_SKIP_FIRST_RUN:-0}" != 1 ] && [ ! -e "$STATE/first-run.done" ]; then
    if ! python3 -c "import tensorrt" 2>/dev/null; then
        echo "first_run.sh: TensorRT does not load: start the container with --runtime nvidia" >&2
        exit 1
    fi
    (cd "$(dirname "$PLUGINS")" && sha256sum --check --quiet "$(basename "$PLUGINS").sha256") || {
        echo "first_run.sh: $PLUGINS does not match its recorded sha256" >&2; exit 1; }
    python3 - "$PLUGINS" <<'PY'
import sys

import tensorrt as trt

registry = trt.get_plugin_registry()
registry.load_library(sys.argv[1])
names = ("Int8CausalConv1d", "Int8SelectiveScan", "HadamardQuantize")
missing = [name for name in names if registry.get_creator(name, "1", "") is None]
if missing:
    sys.exit(f"first_run.sh: {sys.argv[1]} does not register {missing}")
print(f"TensorRT {trt.__version__}: edge-quamba plugins registered from {sys.argv[1]}")
PY
    if python3 -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is None)"; then
        echo "first_run.sh: building the torch binding of the CUDA kernels for sm_87 (minutes, once)"
        TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-8.7} \
            python3 -c "from edge_quamba.ops.cuda_ops import load_extension; load_extension()"
    fi
    mkdir -p "$STATE" && touch "$STATE/first-run.done"
fi
exec "$@"
