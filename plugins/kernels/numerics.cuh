// Device helpers that define the numerics shared by every kernel (include from .cu files only).
//
// Exactness rules (the reference is edge_quamba/quant/primitives.py and qops.py, float32 throughout):
//   * every float op is written as an explicitly rounded intrinsic (__fmul_rn, __fadd_rn, __fdiv_rn), which nvcc
//     never contracts into an FMA, whatever --fmad says (the build also passes --fmad=false as a second guard);
//   * quantization divides by the scale (never multiplies by a reciprocal) and rounds half to even
//     (__float2int_rn), then clamps to [-127, 127]; NaN -> 0;
//   * expf / log1pf are the accurate CUDA functions (never __expf; no --use_fast_math); they may differ from the
//     CPU's libm in the last bit, which the tests allow for.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

#include "common.h"

namespace edge_quamba {
namespace kernels {

// q = clamp(round_half_even(x / scale), -127, 127); NaN -> 0, +-Inf -> +-127 (primitives.quantize).
__device__ __forceinline__ int8_t quantize_rn(float x, float scale) {
    float quotient = __fdiv_rn(x, scale);
    if (quotient != quotient) return 0;                       // NaN
    quotient = fminf(fmaxf(quotient, -127.0f), 127.0f);       // clamp first: same result, no int overflow
    return static_cast<int8_t>(__float2int_rn(quotient));     // round half to even
}

// The out_scale of output column n: the single out_scale, or its segment's (common.h, OutScaleSegments).
__device__ __forceinline__ float column_out_scale(const OutScaleSegments& s, float out_scale, int n) {
    if (s.count == 0) return out_scale;
#pragma unroll
    for (int i = 0; i < kMaxOutSegments - 1; ++i) {
        if (i < s.count - 1 && n < s.end[i]) return s.scale[i];
    }
    return s.scale[s.count - 1];
}

// An int8 activation code as every op reads it: -128 (only TensorRT's saturating QuantizeLinear writes it) reads as
// -127 (primitives.read_codes; "Reading codes" in primitives.py says why).
__device__ __forceinline__ int read_code(int8_t q) {
    return q < -127 ? -127 : q;
}

// silu(v) = v / (1 + exp(-v)), each op rounded (the contract's formula).
__device__ __forceinline__ float silu_rn(float v) {
    return __fdiv_rn(v, __fadd_rn(1.0f, expf(-v)));
}

// softplus with torch's threshold 20: dt when dt > 20, else log1p(exp(dt)).
__device__ __forceinline__ float softplus_rn(float dt) {
    return dt > 20.0f ? dt : log1pf(expf(dt));
}

// One causal-conv output from its exact int32 window sum: float32(acc) * alpha (+ bias), SiLU, quantize at
// out_scale (causal_conv1d.h's contract; the conv kernel and the GEMV's conv epilogue both call this).
__device__ __forceinline__ int8_t conv_output_rn(int acc, float alpha, const float* bias, float bias_c,
                                                 float out_scale) {
    float v = __fmul_rn(static_cast<float>(acc), alpha);
    if (bias != nullptr) v = __fadd_rn(v, bias_c);
    return quantize_rn(silu_rn(v), out_scale);
}

}  // namespace kernels
}  // namespace edge_quamba
