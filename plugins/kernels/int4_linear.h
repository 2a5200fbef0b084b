// 4-bit-weight linears (W4A8, W4A16) on the group-wise int4 weights exactly as the artifact stores them.
//
// Weight layout (edge_quamba/quant/primitives.py, int4 section; Int4Linear in edge_quamba/quant/qmodel.py):
//   w_packed (N, ceil(K / 2)) uint8, row-major and contiguous: row n holds codes q[n, 0..K-1], two per byte along
//   K, low nibble first (code 2j in bits 0-3 of byte j, code 2j + 1 in bits 4-7), two's-complement nibbles in
//   [-7, 7]; a row of odd K ends with a zero high nibble.
//   w_scale (N, G) float32 contiguous, G = ceil(K / group_size): group g of row n covers columns
//   [g * group_size, min((g + 1) * group_size, K)) (the last group may be partial; K < group_size is one group).
//
// w4a8_linear (reference primitives.int4_group_linear + bias, op edge_quamba::w4a8_linear), bit-exact:
//   x_q (M, K) int8 codes read raw (a GEMM reads -128 as -128, primitives "Reading codes"), x_scale per tensor.
//   acc_g[m, n] = sum over the columns k of group g of x_q[m, k] * q[n, k]   (exact int32, any order)
//   alpha_g     = float32(x_scale * w_scale[n, g])                            (one rounding)
//   y = float32(acc_0) * alpha_0;  for g = 1 .. G-1:  y = y + float32(acc_g) * alpha_g   (ascending g, each op
//   rounded, no FMA);  then y = y + bias[n] (float32) when bias is given.
// w4a8_linear_quantize (op edge_quamba::w4a8_linear_quantize): that y, then q = quantize_rn(y, out_scale)
//   (numerics.cuh: a true division, half to even, [-127, 127]), bit-exact; with out_segments (common.h) each
//   column segment at its own scale (op edge_quamba::w4a8_linear_quantize_segments).
// w4a16_linear (reference op edge_quamba::w4a16_linear): x (M, K) float16 -> y (M, N) float16 =
//   float16(sum_k float32(x[m, k]) * float32(q[n, k] * w_scale[n, g(k)]) + bias[n]), accumulated in float32. The
//   reference sums in its BLAS's order; the kernels sum each group's products x * q in float32 (products exact:
//   an 11-bit float16 significand times a 3-bit code), multiply the group sum by the group's scale and add the
//   groups in float32, then round once to float16. So W4A16 agrees within float32 rounding before the one float16
//   rounding (the tests' stated tolerance), not bit for bit.
//
// Dispatch (inside each launcher, so every caller gets the same kernels):
//   M <= 16 (decode): a GEMV that reads each weight row once per launch (per 4 x rows for W4A8, 8 for W4A16).
//     W4A8: threads split each row's K (split-K inside a block), unpack nibbles to int8 and __dp4a; each group's
//     exact int32 sum (a shuffle over the lanes that read it, or integer atomics in shared memory for groups wider
//     than those lanes) becomes its float term, and one thread per (row, x row) adds the terms in ascending group
//     order as above. Any K, any group size.
//     W4A16: mma.sync m16n8k16 (float16 in, float32 accumulate) with the weight rows as the 16-row operand and up to
//     8 x rows as the 8-column one; the 8 warps of a block split K by whole groups and add their partial sums in
//     warp order. Needs K % 32 == 0, group_size % 32 == 0, x row stride % 8 == 0 and a 16-byte-aligned x; other
//     shapes use a one-warp-per-output kernel (any shape, slow: e.g. the demo model's dt_proj, K = 24).
//   M > 16 (prefill): a tensor-core GEMM, 64 x rows x 64 weight rows per block, K in steps of 32 columns through a
//     4-stage cp.async pipeline; each step's weight tile is unpacked in registers (W4A8: int8 mma m16n8k32, W4A16:
//     float16 mma m16n8k16); at the end of each group the accumulators are scaled and added to the float32 result
//     in registers, groups in ascending order (for W4A8 exactly the order above). Needs K % 32 == 0,
//     group_size % 32 == 0, x row stride % 16 bytes == 0 and a 16-byte-aligned x (the 2.8b model's four linears
//     qualify); otherwise the GEMV kernels run for any M.
// Requirements of every path: K <= 131071 (primitives.MAX_K), G <= kInt4MaxGroups (the W4A8 GEMV keeps a block's
// per-group sums in shared memory), w_packed, w_scale, bias contiguous; y's rows may be strided.
#pragma once

#include <cuda_fp16.h>

#include "causal_conv1d.h"
#include "common.h"

namespace edge_quamba {
namespace kernels {

constexpr int kInt4MaxGroups = 6144;  // G = ceil(K / group_size) of a W4A8 linear (24 KB of shared memory a row)

struct W4A8LinearParams {
    int64_t M;                // rows of x (batch * seqlen)
    int N;                    // out_features
    int K;                    // in_features
    int group_size;           // >= 1
    const int8_t* x;          // (M, K), row stride x_row_stride, last-dim stride 1
    int64_t x_row_stride;
    const uint8_t* w_packed;  // (N, ceil(K / 2)) contiguous, see above
    const float* w_scale;     // (N, G) float32 contiguous
    const float* bias;        // (N) float32 or nullptr
    float* y;                 // (M, N), row stride y_row_stride
    int64_t y_row_stride;
    float x_scale;            // > 0, finite
    // Optional (decode, the GEMV only): y = residual + y, one more rounded add (int8_linear.h's residual).
    const float* residual;    // (M, N) float32, row stride residual_row_stride, or nullptr
    int64_t residual_row_stride;
};

cudaError_t launch_w4a8_linear(const W4A8LinearParams& p, cudaStream_t stream);

struct W4A8LinearQuantizeParams {
    int64_t M;
    int N;
    int K;
    int group_size;
    const int8_t* x;          // (M, K), row stride x_row_stride, last-dim stride 1
    int64_t x_row_stride;
    const uint8_t* w_packed;  // (N, ceil(K / 2)) contiguous
    const float* w_scale;     // (N, G) float32 contiguous
    const float* bias;        // (N) float32 or nullptr
    int8_t* y_q;              // (M, N), row stride y_row_stride
    int64_t y_row_stride;
    float x_scale, out_scale;  // > 0, finite (out_scale: unless out_segments are given)
    OutScaleSegments out_segments;  // optional: a scale per column segment (count 0: out_scale)
    // Optional (decode, the GEMV only): the conv step over columns [conv_begin, conv_begin + conv.dim), as in
    // Int8LinearQuantizeParams (int8_linear.h).
    int conv_begin;
    CausalConv1dParams conv;
};

cudaError_t launch_w4a8_linear_quantize(const W4A8LinearQuantizeParams& p, cudaStream_t stream);

struct W4A16LinearParams {
    int64_t M;
    int N;
    int K;
    int group_size;
    const __half* x;          // (M, K) float16, row stride x_row_stride, last-dim stride 1
    int64_t x_row_stride;
    const uint8_t* w_packed;  // (N, ceil(K / 2)) contiguous
    const float* w_scale;     // (N, G) float32 contiguous
    const float* bias;        // (N) float32 or nullptr
    __half* y;                // (M, N) float16, row stride y_row_stride
    int64_t y_row_stride;
};

cudaError_t launch_w4a16_linear(const W4A16LinearParams& p, cudaStream_t stream);

}  // namespace kernels
}  // namespace edge_quamba
