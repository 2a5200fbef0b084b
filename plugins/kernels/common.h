// Shared declarations of the edge-quamba int8 kernels (plain CUDA C++: no torch, no TensorRT types).
//
// Conventions of every launcher in this folder:
//   * one params struct + `cudaError_t launch_<op>(const <Op>Params&, cudaStream_t)`;
//   * strides and sizes are in ELEMENTS of the tensor's dtype, never bytes; the innermost (channel) stride is 1;
//   * scales are float32 (x ~= q * scale), the int8 convention of edge_quamba/quant/primitives.py:
//     symmetric, zero point 0, q in [-127, 127], q = clamp(round_half_even(x / scale)) with a true division;
//   * a launcher validates its params and returns cudaErrorInvalidValue (launching nothing) when they are unusable,
//     otherwise the error of the launch itself (cudaGetLastError), so that a caller can report one line;
//   * nothing allocates: outputs and workspaces are the caller's.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

namespace edge_quamba {
namespace kernels {

// Element type of a floating input that kernels read (and convert to float32 exactly before any arithmetic).
enum class FloatType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// Column segments of a linear's int8 output, each quantized at its own scale (Mamba2's in_proj writes z | xBC | Δ,
// each at its site's scale, in one launch instead of a float32 output and three quantize kernels). Column n takes
// scale[i] of the first segment i with n < end[i]. count == 0: not used, the params' out_scale holds for every
// column.
constexpr int kMaxOutSegments = 4;
struct OutScaleSegments {
    int count = 0;                       // 0, or 1 .. kMaxOutSegments
    int end[kMaxOutSegments] = {};       // strictly increasing, end[count - 1] == N
    float scale[kMaxOutSegments] = {};   // > 0, finite
};

// A scale the launchers accept: > 0 and finite (NaN fails).
inline bool usable_scale(float v) { return v > 0.0f && v <= 3.402823466e38f; }

// The launchers' check: out_scale usable when no segments are given, else every segment's scale, with the ends
// strictly increasing up to N.
inline bool valid_out_scales(const OutScaleSegments& s, float out_scale, int N) {
    if (s.count == 0) return usable_scale(out_scale);
    if (s.count < 0 || s.count > kMaxOutSegments || s.end[s.count - 1] != N) return false;
    for (int i = 0; i < s.count; ++i) {
        if (!usable_scale(s.scale[i]) || s.end[i] <= (i == 0 ? 0 : s.end[i - 1])) return false;
    }
    return true;
}

// Programmatic dependent launch (PDL; compute capability 9.0 and later). Off by default. When a caller turns it on
// (set_programmatic_launch(true), e.g. while capturing a decode graph), the launchers of the decode kernels launch with
// cudaLaunchAttributeProgrammaticStreamSerialization: such a kernel may start while the previous kernel of its stream
// still runs, once every block of that kernel has passed its wait_for_producer(). Until wait_for_producer() returns (the
// previous kernel finished, its writes visible) it may only read what no kernel writes (weights: the GEMVs issue their
// first weight loads there); it neither reads an activation nor writes anything before it, since a graph's memory
// pool may hand its output the buffer the previous kernel still reads. Every kernel that a launcher starts through
// launch_kernel calls wait_for_producer(), which then lets the next kernel launch (after the wait, so at most one
// kernel runs ahead). On sm_87 (Orin) and in the CPU emulator it is a no-op and launches are plain.
__device__ __forceinline__ void wait_for_producer() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    cudaGridDependencySynchronize();
    cudaTriggerProgrammaticLaunchCompletion();
#endif
}

// The process-wide switch (one flag for every launcher of this library; read at each launch).
inline bool& programmatic_launch_flag() {
    static bool on = false;
    return on;
}
inline void set_programmatic_launch(bool on) { programmatic_launch_flag() = on; }
inline bool programmatic_launch() { return programmatic_launch_flag(); }

// kernel<<<grid, block, smem, stream>>>(args...), with the PDL attribute when the switch is on; returns the launch's
// error (cudaLaunchKernelEx's, else cudaGetLastError's).
template <typename... Params, typename... Args>
cudaError_t launch_kernel(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                          Args... args) {
    cudaLaunchAttribute attribute[1];
    attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attribute[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t config{};
    config.gridDim = grid;
    config.blockDim = block;
    config.dynamicSmemBytes = smem;
    config.stream = stream;
    config.attrs = attribute;
    config.numAttrs = programmatic_launch() ? 1 : 0;
    const cudaError_t err = cudaLaunchKernelEx(&config, kernel, static_cast<Params>(args)...);
    return err != cudaSuccess ? err : cudaGetLastError();
}

}  // namespace kernels
}  // namespace edge_quamba
