// rms_norm_quantize: x (rows, d) float32 -> int8 (rows, d) = quantize(weight * (x * rsqrt(mean(x^2) + eps)), scale)
// (op edge_quamba::rms_norm_quantize; reference: edge_quamba.ops.torch_ops.rms_norm_quantize, i.e. RMSNorm of
// edge_quamba.models.mamba.Norm then primitives.quantize). Each float op is rounded as the reference rounds it:
// mean = sum(x*x) / d (float32), rsqrt(v) = 1 / sqrt(v) (two correctly rounded ops, as torch's CPU rsqrt),
// normed = x * rsqrt, out = weight * normed, q = clamp(rn(out / scale)). The sum of squares is a tree in the
// kernel's own order, so its last bits (and a code at a .5 rounding tie) may differ from the reference.
#pragma once

#include "common.h"

namespace edge_quamba {
namespace kernels {

constexpr int kRmsNormMaxDim = 8192;  // the row lives in registers: 8 float32 per thread of a 1024-thread block

struct RmsNormQuantizeParams {
    int64_t rows;          // product of the leading dims
    int dim;               // d, 1 .. kRmsNormMaxDim
    int64_t x_row_stride;  // elements between rows of x (>= dim), last-dim stride 1
    const float* x;
    const float* weight;   // (d) float32
    int8_t* q;             // (rows, d) contiguous
    float eps;             // >= 0
    float scale;           // > 0, finite
};

cudaError_t launch_rms_norm_quantize(const RmsNormQuantizeParams& p, cudaStream_t stream);

// Mamba2's gated RMSNorm before out_proj, then quantize (ops gated_rms_norm_quantize and, with the Hadamard transform
// between the two, gated_rms_norm_hadamard_quantize; reference: edge_quamba.quant.qops.gated_rms_norm, then
// primitives.quantize or qops.hadamard_quantize). Per row, per group G of group_size consecutive channels:
//   g = y * silu(q_z * z_scale)           (silu(v) = v / (1 + expf(-v)), each op rounded)
//   r = 1 / sqrt(sum_{G}(g * g) / group_size + eps)    (the sum in the kernel's own order, as rms_norm_quantize)
//   v = weight * (g * r)                   (-> the Hadamard stages, then) q = quantize(v, out_scale)
// Codes equal the reference's except possibly at .5 rounding ties (the sum's order, expf's last bit).
struct GatedRmsNormQuantizeParams {
    int64_t rows;          // product of the leading dims
    int dim;               // d_in
    int group_size;        // d_in / ngroups; divides dim
    int64_t y_row_stride;  // elements between rows of y (>= dim), last-dim stride 1
    const float* y;        // (rows, d) float32: the SSD scan's output
    int64_t z_row_stride;  // elements between rows of z (>= dim), last-dim stride 1
    const int8_t* z;       // (rows, d) int8 gate codes at z_scale
    const float* weight;   // (d) float32, the norm's weight
    int8_t* y_q;           // (rows, d) contiguous
    float z_scale, eps, out_scale;  // z_scale, out_scale > 0 and finite; eps >= 0
};

// Without the Hadamard transform: one block per (row, group), group_size <= kRmsNormMaxDim.
cudaError_t launch_gated_rms_norm_quantize(const GatedRmsNormQuantizeParams& p, cudaStream_t stream);

}  // namespace kernels
}  // namespace edge_quamba
