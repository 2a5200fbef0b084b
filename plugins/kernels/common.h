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

}  // namespace kernels
}  // namespace edge_quamba
