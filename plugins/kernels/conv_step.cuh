// The causal conv step in a linear's epilogue (decode: in_proj's output columns are the conv's inputs), shared by
// the int8 GEMV (int8_linear.cu) and the W4A8 GEMV (int4_gemv.cu); include from those .cu files only.
#pragma once

#include <cstdint>

#include "causal_conv1d.h"
#include "common.h"
#include "numerics.cuh"

namespace edge_quamba {
namespace kernels {

// The conv step of channel ch for x row (= sequence) m, whose input code q was just written: the window is the
// state's last width - 1 inputs and q (causal_conv1d.cu at seqlen 1; the same integer sum and conv_output_rn), and
// the new state is that window. Reads the state row before writing it, so in and out may alias.
__device__ __forceinline__ void conv_step(const CausalConv1dParams& c, int64_t m, int ch, int8_t q) {
    const int64_t row = (m * c.dim + ch) * c.width;
    const int8_t* w = c.weight + int64_t(ch) * c.width;
    int acc = 0;
    for (int j = 0; j + 1 < c.width; ++j) {
        const int x = read_code(c.conv_state_in[row + j + 1]);
        acc += w[j] * x;
        c.conv_state_out[row + j] = static_cast<int8_t>(x);
    }
    acc += w[c.width - 1] * read_code(q);
    c.conv_state_out[row + c.width - 1] = q;
    const float alpha = __fmul_rn(c.x_scale, c.weight_scale);
    const float bias = c.bias != nullptr ? c.bias[ch] : 0.0f;
    const float out_scale = c.out_scales != nullptr ? c.out_scales[ch] : c.out_scale;
    c.u[m * c.dim + ch] = conv_output_rn(acc, alpha, c.bias, bias, out_scale);
}

// The launchers' check of a conv step over output columns [conv_begin, conv_begin + conv.dim) of an N-column
// output quantized at out_scale or out_segments: the columns inside the output and inside one segment whose scale
// is conv.x_scale, a width of 1 .. kConvMaxWidth, its buffers given, usable scales (per-channel out_scales are the
// caller's, as in launch_int8_causal_conv1d).
inline bool valid_conv_step(const CausalConv1dParams& c, int conv_begin, const OutScaleSegments& s, float out_scale,
                            int N) {
    if (c.dim < 0 || conv_begin < 0 || int64_t(conv_begin) + c.dim > N || c.width < 1 || c.width > kConvMaxWidth ||
        c.conv_state_in == nullptr || c.conv_state_out == nullptr || c.weight == nullptr || c.u == nullptr ||
        !usable_scale(c.weight_scale) || (c.out_scales == nullptr && !usable_scale(c.out_scale))) {
        return false;
    }
    if (s.count == 0) return c.x_scale == out_scale;
    for (int i = 0; i < s.count; ++i) {
        const int begin = i == 0 ? 0 : s.end[i - 1];
        if (conv_begin >= begin && conv_begin < s.end[i]) {
            return conv_begin + c.dim <= s.end[i] && c.x_scale == s.scale[i];
        }
    }
    return false;
}

}  // namespace kernels
}  // namespace edge_quamba
