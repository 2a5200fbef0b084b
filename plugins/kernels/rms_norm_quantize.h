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

}  // namespace kernels
}  // namespace edge_quamba
