// int8_selective_scan: Mamba's selective scan on dequantized int8 inputs with a float32 state, gated by silu(z).
// Reference: edge_quamba.quant.qops.int8_selective_scan (float order of OPS_CONTRACT.md):
//   u = q_u * u_scale;  dt = q_dt * dt_scale + dt_bias[d];  delta = dt > 20 ? dt : log1pf(expf(dt))
//   per t:  h[d, s] = expf(delta * A[d, s]) * h[d, s] + (delta * u) * (q_B[s] * B_scale)
//           y[d] = (sum_s h[d, s] * (q_C[s] * C_scale)) + D[d] * u;   out = y * (z / (1 + expf(-z)))
// Every op rounded separately (no FMA); the sum over s is a shuffle tree (order unspecified in the contract), so
// y and the state agree with the reference within float tolerance, not bit for bit.
//
// Parallelism: a group of `dstate` adjacent lanes owns one (batch, channel); lane s keeps h[s] in a register and
// walks the sequence; the per-channel scalars (u, delta, silu(z)) are computed once per timestep by one lane of the
// group (lane j for timestep t0 + j) and broadcast with shuffles. Prefill (seqlen = l) and decode (seqlen = 1) are
// the same kernel; at decode it may also run dt_proj (dt_weight, below: one launch fewer a layer). dstate must be a
// power of two <= 32 (Mamba1: 16).
#pragma once

#include <cuda_fp16.h>

#include "common.h"

namespace edge_quamba {
namespace kernels {

struct SelectiveScanParams {
    int batch, seqlen, dim, dstate;
    // int8 inputs, strides in elements, channel (or state) stride 1:
    const int8_t* u;  int64_t u_batch_stride, u_seq_stride;    // (b, l, d)  conv output
    const int8_t* dt; int64_t dt_batch_stride, dt_seq_stride;  // (b, l, d)  dt_proj output (no bias)
    const int8_t* z;  int64_t z_batch_stride, z_seq_stride;    // (b, l, d)  gate: a view of in_proj's output
    const int8_t* B;  int64_t B_batch_stride, B_seq_stride;    // (b, l, n)  views of x_proj's (b, l, r + 2n) output
    const int8_t* C;  int64_t C_batch_stride, C_seq_stride;    // (b, l, n)
    const float* ssm_state_in;   // (b, d, n) contiguous float32
    const float* A;              // (d, n) contiguous float32, = -exp(A_log)
    const float* D;              // (d)
    const float* dt_bias;        // (d)
    float* y;                    // (b, l, d) contiguous float32
    float* ssm_state_out;        // (b, d, n) contiguous; may alias ssm_state_in (each element: read, then written)
    float u_scale, dt_scale, B_scale, C_scale, z_scale;
    // Optional, decode only (seqlen 1): dt_proj here instead of reading dt (dt_weight != nullptr; dt unused). Its
    // codes are those of int8_linear_quantize without bias (int8_linear.h): dt_q[b, d] = quantize(float32(sum_r
    // dt_r[b, r] * dt_weight[d, r]) * float32(dt_r_scale * dt_weight_scale), dt_scale), exact int32 sum of the raw
    // codes, written to dt_out (b, d) contiguous and scanned as the dt input would be.
    const int8_t* dt_r; int64_t dt_r_batch_stride;  // (b, dt_rank), channel stride 1: a view of x_proj's output
    const int8_t* dt_weight;     // (d, dt_rank) contiguous
    int dt_rank;
    float dt_r_scale, dt_weight_scale;
    int8_t* dt_out;
};

cudaError_t launch_int8_selective_scan(const SelectiveScanParams& p, cudaStream_t stream);

// selective_scan_f16: the fp reference's scan (edge_quamba.models.mamba.selective_scan, op edge_quamba::selective_scan)
// on float16 u, B, C, D and float32 delta (softplus already applied), A and state, as W4A16's float16 mixer calls it;
// no gate (the caller multiplies by silu(z)). Float order of the reference, every op rounded (no FMA):
//   du = delta * u (float32 of the float16 u);  per t:  h[d, s] = h[d, s] * expf(delta * A[d, s]) + du * B[s]
//   y[d] = (sum_s h[d, s] * C[s]) + u * D[d]
// The sum over s is the same shuffle tree as the int8 kernel's (the reference's is its BLAS's): y and the state agree
// within float tolerance. Same work split as the int8 kernel: dstate adjacent lanes per (batch, channel).
struct SelectiveScanF16Params {
    int batch, seqlen, dim, dstate;
    const __half* u; int64_t u_batch_stride, u_seq_stride;              // (b, l, d) float16
    const float* delta; int64_t delta_batch_stride, delta_seq_stride;   // (b, l, d) float32
    const __half* B; int64_t B_batch_stride, B_seq_stride;              // (b, l, n) float16 (views of x_proj's out)
    const __half* C; int64_t C_batch_stride, C_seq_stride;              // (b, l, n) float16
    const float* A;              // (d, n) contiguous float32
    const __half* D;             // (d) float16
    const float* ssm_state_in;   // (b, d, n) contiguous float32
    float* y;                    // (b, l, d) contiguous float32
    float* ssm_state_out;        // (b, d, n) contiguous; may alias ssm_state_in
};

cudaError_t launch_selective_scan_f16(const SelectiveScanF16Params& p, cudaStream_t stream);

}  // namespace kernels
}  // namespace edge_quamba
