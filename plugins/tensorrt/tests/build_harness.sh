#!/usr/bin/env bash
# Build the plugin library and the test harness with nvcc + g++ only (no CMake, no libnvinfer):
#
#   build_harness.sh TRT_INCLUDE_DIR SM OUT_DIR
#
#   TRT_INCLUDE_DIR  a folder holding NvInferRuntime.h (TensorRT 10.x or 11.x headers)
#   SM               compute capability without the dot: 87 (Orin), 90 (H100/H200)
#   OUT_DIR          gets libedge_quamba_trt_plugins.so, harness and w4_harness
#
# Environment: KERNELS_DIR (default: plugins/kernels of this checkout), CUDA_HOME (default: /usr/local/cuda),
# NVCC (default: nvcc), CXX (default: g++).
# The same sources and flags as CMakeLists.txt: C++17, -O3, no fast math, --fmad=false (the kernels write every
# float op as a rounded intrinsic; this is the second guard), hidden symbols except getCreators/setLoggerFinder.
set -euo pipefail

if [ $# -ne 3 ]; then
    echo "usage: $0 TRT_INCLUDE_DIR SM OUT_DIR" >&2
    exit 2
fi
TRT_INCLUDE=$1
SM=$2
OUT=$3
HERE=$(cd "$(dirname "$0")/.." && pwd)            # plugins/tensorrt
KERNELS_DIR=${KERNELS_DIR:-$HERE/../kernels}
NVCC=${NVCC:-nvcc}
CXX=${CXX:-g++}

[ -f "$TRT_INCLUDE/NvInferRuntime.h" ] || { echo "$TRT_INCLUDE holds no NvInferRuntime.h" >&2; exit 2; }
[ -f "$KERNELS_DIR/causal_conv1d.h" ] || { echo "$KERNELS_DIR holds no kernel headers (merge the kernels branch)" >&2; exit 2; }
CUDA_INCLUDE=${CUDA_HOME:-/usr/local/cuda}/include
KERNELS_PARENT=$(cd "$KERNELS_DIR/.." && pwd)
KERNELS_NAME=$(basename "$KERNELS_DIR")
[ "$KERNELS_NAME" = kernels ] || { echo "KERNELS_DIR must be a folder named kernels" >&2; exit 2; }

mkdir -p "$OUT/obj"
INCLUDES=(-I"$HERE" -I"$HERE/common" -I"$KERNELS_PARENT" -isystem "$TRT_INCLUDE" -isystem "$CUDA_INCLUDE")
CXXFLAGS=(-std=c++17 -O2 -fPIC -fvisibility=hidden -Wall -Wextra -Werror)
NVCCFLAGS=(-std=c++17 -O3 --fmad=false -Xcompiler -fPIC,-fvisibility=hidden
    -gencode "arch=compute_${SM},code=sm_${SM}")

objects=()
pids=()
for cu in causal_conv1d selective_scan hadamard_quantize int4_linear int4_gemv int4_gemv_f16 int4_gemm ssd_scan \
          rms_norm_quantize; do
    "$NVCC" "${NVCCFLAGS[@]}" -I"$KERNELS_PARENT" -c "$KERNELS_DIR/$cu.cu" -o "$OUT/obj/$cu.o" &
    pids+=($!)
    objects+=("$OUT/obj/$cu.o")
done
for src in common/pluginCommon Int8CausalConv1dPlugin/int8CausalConv1dPlugin \
           Int8SelectiveScanPlugin/int8SelectiveScanPlugin HadamardQuantizePlugin/hadamardQuantizePlugin \
           Int4LinearPlugin/int4LinearPlugin SelectiveScanF16Plugin/selectiveScanF16Plugin \
           Int8CausalConv1dChannelScalesPlugin/int8CausalConv1dChannelScalesPlugin Int8SSDScanPlugin/int8SSDScanPlugin \
           GatedRMSNormQuantizePlugin/gatedRMSNormQuantizePlugin pluginRegistration; do
    name=$(basename "$src")
    "$CXX" "${CXXFLAGS[@]}" "${INCLUDES[@]}" -c "$HERE/$src.cpp" -o "$OUT/obj/$name.o"
    objects+=("$OUT/obj/$name.o")
done
for pid in "${pids[@]}"; do
    wait "$pid"   # a failed nvcc fails the script (set -e)
done
harness_objects=()
for src in harness harnessMain selftest trtOrder caseFiles deviceIo; do
    "$CXX" "${CXXFLAGS[@]}" "${INCLUDES[@]}" -I"$HERE/tests" -c "$HERE/tests/$src.cpp" -o "$OUT/obj/harness_$src.o"
    harness_objects+=("$OUT/obj/harness_$src.o")
done
for part in w4Selftest w4Run; do
    "$CXX" "${CXXFLAGS[@]}" "${INCLUDES[@]}" -I"$HERE/tests" -c "$HERE/tests/$part.cpp" -o "$OUT/obj/$part.o"
done

# The library TensorRT loads, and the harness, which links the same objects (it calls getCreators like TensorRT).
"$NVCC" -shared -o "$OUT/libedge_quamba_trt_plugins.so" "${objects[@]}" -cudart shared
"$NVCC" -o "$OUT/harness" "${harness_objects[@]}" "${objects[@]}" -cudart shared
# The 4-bit configs' harness reaches the plugins only through the library's getCreators, as TensorRT does.
"$NVCC" -o "$OUT/w4_harness" "$OUT/obj/w4Selftest.o" "$OUT/obj/w4Run.o" "$OUT/obj/harness_harness.o" \
    "$OUT/obj/harness_caseFiles.o" -L"$OUT" -ledge_quamba_trt_plugins \
    -Xlinker -rpath='$ORIGIN' -cudart shared
echo "built $OUT/libedge_quamba_trt_plugins.so, $OUT/harness and $OUT/w4_harness (sm_$SM, TensorRT headers $TRT_INCLUDE)"
