// int8_causal_conv1d: depthwise causal conv over time on int8 inputs continuing from an int8 state, exact int32
// accumulation, dequantize, + bias, SiLU, requantize. Reference: edge_quamba.quant.qops.int8_causal_conv1d.
//
//   acc[b, t, c] = sum_{j<k} w[c, j] * in[b, t-k+1+j, c]   (in = concat(conv_state_in, x) over time; exact int32)
//   v = float32(acc) * float32(x_scale * weight_scale) (+ bias[c]);  u = v / (1 + expf(-v));
//   u_q = quantize(u, out_scale);  conv_state_out[b, c, :] = the last k inputs, oldest first.
// Per-channel output scales (op int8_causal_conv1d_channel_scales, Mamba2's conv over x | B | C; reference
// edge_quamba.quant.qops.int8_causal_conv1d_channel_scales): out_scales != nullptr, u_q[.., c] = quantize(u, out_scales[c]).
// Each float op is rounded separately (no FMA). The integers match the reference exactly except where the
// reference quotient u / out_scale is within float noise of .5: expf (CUDA) and torch's CPU exp may differ in the
// last bit, so such ties may round to the other neighbour (the tie rule of the tests).
//
// Used for prefill (seqlen = l) and for the decode state update (seqlen = 1): same kernel.
#pragma once

#include "common.h"

namespace edge_quamba {
namespace kernels {

constexpr int kConvMaxWidth = 4;  // width k <= 4 (Mamba's d_conv)

struct CausalConv1dParams {
    int batch, seqlen, dim, width;
    int64_t x_batch_stride, x_seq_stride;  // x (b, l, d) int8, channel stride 1 (may be the x half of in_proj's out)
    const int8_t* x;
    const int8_t* conv_state_in;   // (b, d, k) contiguous, oldest input first, at x_scale
    const int8_t* weight;          // (d, k) contiguous
    const float* bias;             // (d) float32 or nullptr
    int8_t* u;                     // (b, l, d) contiguous
    int8_t* conv_state_out;        // (b, d, k) contiguous; may alias conv_state_in (each channel's reader writes it)
    float x_scale, weight_scale, out_scale;  // out_scale: unused when out_scales is set
    const float* out_scales;       // (d) float32 per-channel output scales (each > 0, finite), or nullptr: out_scale
};

cudaError_t launch_int8_causal_conv1d(const CausalConv1dParams& p, cudaStream_t stream);

}  // namespace kernels
}  // namespace edge_quamba
