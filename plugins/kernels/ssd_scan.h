// int8_ssd_scan: Mamba2's SSD recurrence on dequantized int8 inputs with a float32 state (no gate: Mamba2 gates in its
// norm). Reference: edge_quamba.quant.qops.int8_ssd_scan (prefill) and int8_ssd_scan_update (l = 1), which share one
// token step. Glossary: edge_quamba.models.mamba2 (h heads of p channels, g groups of n states; head hd reads the B
// and C of group hd / (h / g)).
//
//   x[c] = q_x[c] * x_scales[c]  (c = hd * p + i);   Δ = softplus(q_dt[hd] * dt_scale + dt_bias[hd])  (threshold 20)
//   B[s] = q_B[gn] * B_scales[gn], C[s] = q_C[gn] * C_scales[gn]  (gn = group * n + s)
//   per token:  decay = expf(Δ * A[hd]);  dtx = Δ * x;
//               h[i, s] = h[i, s] * decay + dtx * B[s]          (each op rounded: the reference's in-place order)
//               y[c] = (sum_s h[i, s] * C[s]) + D[hd] * x
// The state update is the reference's op for op (expf / log1pf may differ from the CPU's libm in the last bit); the
// sum over s is the kernel's own order (per lane a chain of fused multiply-adds over its states, then a shuffle tree
// over the lanes of the row), so y agrees with the reference within float tolerance, not bit for bit.
//
// Sequential over the tokens (prefill: seqlen = l; decode: seqlen = 1, the same kernel), parallel over (batch, head,
// channel row i, state). d_state n <= 256 (any n; lanes pad to a power of two). Codes are read with read_code.
#pragma once

#include "common.h"

namespace edge_quamba {
namespace kernels {

constexpr int kSsdMaxState = 256;

struct SsdScanParams {
    int batch, seqlen, nheads, headdim, ngroups, dstate;  // b, l, h, p, g, n
    // int8 inputs, strides in elements, channel stride 1:
    const int8_t* x;  int64_t x_batch_stride, x_seq_stride;    // (b, l, h p)  e.g. the x piece of the conv output
    const int8_t* dt; int64_t dt_batch_stride, dt_seq_stride;  // (b, l, h)    in_proj's dt, without dt_bias
    const int8_t* B;  int64_t B_batch_stride, B_seq_stride;    // (b, l, g n)
    const int8_t* C;  int64_t C_batch_stride, C_seq_stride;    // (b, l, g n)
    const float* ssm_state_in;   // (b, h, p, n) contiguous float32
    const float* A;              // (h) = -exp(A_log)
    const float* D;              // (h)
    const float* dt_bias;        // (h)
    const float* x_scales;       // (h p) per-channel scales of x
    const float* B_scales;       // (g n)
    const float* C_scales;       // (g n)
    float dt_scale;
    float* y;                    // (b, l, h p) contiguous float32
    float* ssm_state_out;        // (b, h, p, n) contiguous; may alias ssm_state_in (each element: read, then written)
};

cudaError_t launch_int8_ssd_scan(const SsdScanParams& p, cudaStream_t stream);

}  // namespace kernels
}  // namespace edge_quamba
