// int8_linear: y (M, N) float32 = float32(x_q (M, K) @ w_q (N, K)^T as exact int32) * alpha (+ bias)
//   alpha = float32(x_scale * weight_scale), rounded once; each epilogue op is rounded separately (no FMA), so the
//   result is bit-exact with edge_quamba.quant.primitives.int8_linear (+ bias added afterwards in float32).
//
// This is the decode GEMV (small M: one token per sequence): each weight row is read once per launch with
// 16-byte loads when K, the strides and the pointers allow it (8-, 4-, 1-byte loads otherwise), a group of
// threads splits K of one row (split-K inside a block, reduced with shuffles / shared memory; int32 sums are exact
// in any order, so the result does not depend on the split), and up to kLinearRowsPerPass rows of x share each
// weight load. It is correct for any M, but for prefill (large M) a tensor-core GEMM is the right tool: the torch
// binding uses torch._int_mm (cuBLASLt IMMA) there, the TensorRT path uses TensorRT's own Q/DQ GEMM.
// Requires K <= 131071 (|acc| <= 128 * 128 * K fits int32).
#pragma once

#include "common.h"

namespace edge_quamba {
namespace kernels {

constexpr int kLinearRowsPerPass = 4;  // rows of x that share one pass over the weight

struct Int8LinearParams {
    int64_t M;             // rows of x (batch * seqlen)
    int N;                 // out_features
    int K;                 // in_features
    const int8_t* x;       // (M, K), row stride x_row_stride, last-dim stride 1 (may be a view, e.g. dt of x_proj)
    int64_t x_row_stride;
    const int8_t* w;       // (N, K) contiguous: the nn.Linear layout
    const float* bias;     // (N) float32 or nullptr
    float* y;              // (M, N), row stride y_row_stride
    int64_t y_row_stride;
    float x_scale, weight_scale;
};

cudaError_t launch_int8_linear(const Int8LinearParams& p, cudaStream_t stream);

}  // namespace kernels
}  // namespace edge_quamba
