// int8_linear: y (M, N) float32 = float32(x_q (M, K) @ w_q (N, K)^T as exact int32) * alpha (+ bias)
//   alpha = float32(x_scale * weight_scale), rounded once; each epilogue op is rounded separately (no FMA), so the
//   result is bit-exact with edge_quamba.quant.primitives.int8_linear (+ bias added afterwards in float32).
//   With x_scale_rows (a per-token input scale, op int8_linear_per_token), row m's epilogue reads its own
//   alpha_m = float32(x_scale_rows[m] * weight_scale): primitives.int8_linear_per_token.
// int8_linear_quantize: the same GEMV whose epilogue then quantizes at out_scale (q = clamp(rn(y / out_scale)))
//   and writes int8 instead of float32: bit-exact with quantize(int8_linear(...), out_scale) (op
//   edge_quamba::int8_linear_quantize), one launch and a quarter of the output bytes. With out_segments (common.h)
//   each column segment is quantized at its own scale (op edge_quamba::int8_linear_quantize_segments). With a conv
//   step (conv.dim > 0, decode: row m is sequence m's one token) the codes of columns [conv_begin, conv_begin +
//   conv.dim) are also the inputs of a causal conv step (causal_conv1d.h) continuing from conv.conv_state_in: the
//   thread that writes column n's code then writes channel n - conv_begin's u code and new state (Mamba's conv over
//   in_proj's x half, op edge_quamba::int8_linear_quantize_conv_update; bit-exact with the two ops in sequence).
// int32_epilogue_quantize: the prefill form of that epilogue, for an int32 accumulator computed elsewhere (the torch
//   binding's torch._int_mm): one pass acc -> float32 * alpha (+ bias) -> int8.
//
// This is the decode GEMV (small M: one token per sequence): each weight row is read once per launch with
// 16-byte loads when K, the strides and the pointers allow it (8-, 4-, 1-byte loads otherwise), a group of
// threads splits K of one row (split-K inside a block, reduced with shuffles / shared memory; int32 sums are exact
// in any order, so the result does not depend on the split), and up to kLinearRowsPerPass rows of x share each
// weight load. It is correct for any M, but for prefill (large M) a tensor-core GEMM is the right tool: the torch
// binding uses torch._int_mm (cuBLASLt IMMA) there, the TensorRT path uses TensorRT's own Q/DQ GEMM.
// Requires K <= 131071 (|acc| <= 128 * 128 * K fits int32).
#pragma once

#include "causal_conv1d.h"
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
    const float* x_scale_rows;  // (M) float32 per-row input scales (> 0), or nullptr: x_scale for every row
    // Optional (decode: the block's residual add in out_proj's epilogue, op int8_linear_residual): y = residual +
    // (the float32 result above), one more rounded add, as the reference block's resid.float() + out.
    const float* residual;      // (M, N) float32, row stride residual_row_stride, or nullptr
    int64_t residual_row_stride;
};

cudaError_t launch_int8_linear(const Int8LinearParams& p, cudaStream_t stream);

struct Int8LinearQuantizeParams {
    int64_t M;             // rows of x
    int N;                 // out_features
    int K;                 // in_features
    const int8_t* x;       // (M, K), row stride x_row_stride, last-dim stride 1
    int64_t x_row_stride;
    const int8_t* w;       // (N, K) contiguous
    const float* bias;     // (N) float32 or nullptr
    int8_t* y_q;           // (M, N), row stride y_row_stride
    int64_t y_row_stride;
    float x_scale, weight_scale, out_scale;  // out_scale > 0, finite (unless out_segments are given)
    OutScaleSegments out_segments;           // optional: a scale per column segment (count 0: out_scale)
    // Optional conv step over columns [conv_begin, conv_begin + conv.dim) (conv.dim 0: none). Used fields of conv:
    // dim, width, conv_state_in / conv_state_out (M, dim, width) contiguous (may alias), weight, bias, u (M, dim)
    // contiguous, x_scale (must equal the scale those columns are quantized at), weight_scale, out_scale(s).
    int conv_begin;
    CausalConv1dParams conv;
};

cudaError_t launch_int8_linear_quantize(const Int8LinearQuantizeParams& p, cudaStream_t stream);

struct Int32EpilogueQuantizeParams {
    int64_t M;             // rows
    int N;                 // columns
    const int32_t* acc;    // (M, N) contiguous exact int32 accumulators of x_q @ w_q^T
    const float* bias;     // (N) float32 or nullptr
    int8_t* y_q;           // (M, N) contiguous
    float x_scale, weight_scale, out_scale;
    OutScaleSegments out_segments;  // optional, as in Int8LinearQuantizeParams
};

cudaError_t launch_int32_epilogue_quantize(const Int32EpilogueQuantizeParams& p, cudaStream_t stream);

}  // namespace kernels
}  // namespace edge_quamba
