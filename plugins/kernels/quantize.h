// quantize: float (rows, cols) -> int8 (rows, cols) contiguous.
//   q = clamp(round_half_even(float32(x) / scale), -127, 127); NaN -> 0, +-Inf -> +-127.
// Reference: edge_quamba.quant.primitives.quantize (bit-exact: one correctly rounded division, __float2int_rn).
#pragma once

#include "common.h"

namespace edge_quamba {
namespace kernels {

struct QuantizeParams {
    int64_t rows;          // product of the leading dims
    int64_t cols;          // last dim
    int64_t x_row_stride;  // elements between rows of x (>= cols); x's last dim has stride 1
    const void* x;         // float32 / float16 / bfloat16, see x_type
    FloatType x_type;
    int8_t* q;             // (rows, cols) contiguous
    float scale;           // > 0, finite
};

cudaError_t launch_quantize(const QuantizeParams& p, cudaStream_t stream);

}  // namespace kernels
}  // namespace edge_quamba
