// hadamard_quantize: y (rows, n) float32 -> int8 (rows, n) = quantize(H_n y / sqrt(n), out_scale), n = m * 2^k with
// m in {1, 12, 20, 28}. Bit-exact with edge_quamba.quant.qops.hadamard_quantize because it follows the FIXED FLOAT
// ORDER of OPS_CONTRACT.md: X = y.reshape(m, p); Sylvester butterflies over p, stages h = 1, 2, ..., p/2, each pair
// (a, b) -> (a + b, a - b); then (m > 1) Z[i] = sum_r H_m[i, r] X[r], r = 0..m-1 in order (sign flips: exact);
// then v = Z * float32(1/sqrt(n)); q = quantize(v, out_scale). H_m: hadamard_tables.h (generated from
// edge_quamba.quant.hadamard by gen_hadamard_tables.py).
//
// Dynamic (per-token) scale, when y_scale != nullptr (op hadamard_quantize_dynamic, out_scale unused): the row's
// rotated values v are kept (registers or shared memory), their amax = max |v| is one block reduction (a max: exact
// in any order), s = __fdiv_rn(fmaxf(amax, 1e-5f), 127.0f) is written to y_scale[row] and q = quantize(v, s): bit-exact
// with edge_quamba.quant.qops.hadamard_quantize_dynamic on finite input (a NaN in a row makes its scale NaN and its
// codes 0; the reference rejects NaN).
#pragma once

#include "common.h"
#include "rms_norm_quantize.h"

namespace edge_quamba {
namespace kernels {

struct HadamardQuantizeParams {
    int64_t rows;          // product of the leading dims
    int dim;               // n
    int64_t y_row_stride;  // elements between rows of y (>= dim), last-dim stride 1
    const float* y;
    int8_t* y_q;           // (rows, n) contiguous
    float out_scale;       // static scale (> 0, finite); unused when y_scale is set
    float* y_scale;        // (rows) float32 per-token scales written by the kernel, or nullptr: static out_scale
};

// True when n = m * 2^k with m in {1, 12, 20, 28} and n fits the kernel's shared memory (n <= 16384).
bool hadamard_dim_supported(int n);

cudaError_t launch_hadamard_quantize(const HadamardQuantizeParams& p, cudaStream_t stream);

// Mamba2's gated RMSNorm, then this transform and quantize, in one kernel (op gated_rms_norm_hadamard_quantize; the
// contract in rms_norm_quantize.h): dim as above, group_size | dim.
cudaError_t launch_gated_rms_norm_hadamard_quantize(const GatedRmsNormQuantizeParams& p, cudaStream_t stream);

}  // namespace kernels
}  // namespace edge_quamba
