// Shared pieces of the 4-bit-weight kernels (int4_linear.cu, int4_gemv.cu, int4_gemv_f16.cu, int4_gemm.cu); include
// from those .cu files only. Plain CUDA C++: the helpers with inline PTX (tensor-core mma) are in int4_mma.cuh, so
// that the files without them run under the CPU kernel emulator (plugins/emulator).
//
// Nibble unpacking (w_packed layout of int4_linear.h: byte j holds code 2j in bits 0-3, code 2j + 1 in bits 4-7):
//   * to int8 for __dp4a / int8 mma: a code is kept in the HIGH nibble of its byte, so the byte read as int8 is
//     exactly 16 * code (two's complement); the integer sums are then 16x the true sums, exact (|16 * 128 * 7 * K|
//     < 2^31 for K <= 131071), and an arithmetic shift right by 4 recovers them exactly;
//   * to float16 for mma m16n8k16: (nibble ^ 8) | 0x6400 is the float16 1024 + 8 + code, and one subtraction of
//     1032 gives the code exactly (both steps are exact in float16).
#pragma once

#include <cstdint>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "causal_conv1d.h"
#include "int4_linear.h"

namespace edge_quamba {
namespace kernels {
namespace w4 {

// One problem of either kernel family, as the launchers of int4_linear.h describe it (x, y typed by the mode).
enum class Mode : int { kW4A8 = 0, kW4A8Quantize = 1, kW4A16 = 2 };

struct Problem {
    int64_t M;
    int N, K, group_size, groups;  // groups = ceil(K / group_size)
    const void* x;                 // int8_t (W4A8) or __half (W4A16), (M, K), row stride x_row_stride elements
    int64_t x_row_stride;
    const uint8_t* w;              // (N, ceil(K / 2)) packed codes
    const float* scale;            // (N, groups)
    const float* bias;             // (N) or nullptr
    void* y;                       // float (kW4A8), int8_t (kW4A8Quantize), __half (kW4A16); row stride y_row_stride
    int64_t y_row_stride;
    float x_scale, out_scale;
    OutScaleSegments out_segments;  // kW4A8Quantize: a scale per column segment (count 0: out_scale)
    // The decode fusions of the W4A8 GEMV (int4_linear.h): the residual add (kW4A8) and the conv step (kW4A8Quantize).
    const float* residual = nullptr;
    int64_t residual_row_stride = 0;
    int conv_begin = 0;
    CausalConv1dParams conv{};
};

// The tensor-core kernels' shape rule (int4_linear.h, "Dispatch"): whole 32-column steps that never straddle a
// group, 16-byte-aligned x rows and packed weight rows.
inline bool tensor_core_shape(const Problem& p, int x_bytes) {
    return p.K % 32 == 0 && p.group_size % 32 == 0 && (p.x_row_stride * x_bytes) % 16 == 0 &&
           reinterpret_cast<uintptr_t>(p.x) % 16 == 0 && reinterpret_cast<uintptr_t>(p.w) % 16 == 0;
}

// Launchers of the kernels (int4_gemv.cu, int4_gemm.cu); params already validated, M, N > 0.
cudaError_t launch_w4a8_gemv(const Problem& p, bool quantize, cudaStream_t stream);
cudaError_t launch_w4a16_gemv(const Problem& p, cudaStream_t stream);     // needs tensor_core_shape(p, 2)
cudaError_t launch_w4a16_generic(const Problem& p, cudaStream_t stream);  // any shape
cudaError_t launch_gemm(const Problem& p, Mode mode, cudaStream_t stream);  // needs tensor_core_shape

// 8 codes (one 32-bit word of w_packed: c0 in bits 0-3, ..., c7 in bits 28-31) -> 16 * (c0, c1, c2, c3) in `lo` and
// 16 * (c4, c5, c6, c7) in `hi`, one int8 per byte, byte 0 first (the order of 8 consecutive int8 x codes).
__device__ __forceinline__ void unpack8_x16(uint32_t w, uint32_t& lo, uint32_t& hi) {
    const uint32_t even = (w << 4) & 0xF0F0F0F0u;  // bytes: 16 c0, 16 c2, 16 c4, 16 c6
    const uint32_t odd = w & 0xF0F0F0F0u;          // bytes: 16 c1, 16 c3, 16 c5, 16 c7
    lo = __byte_perm(even, odd, 0x5140);           // even.b0, odd.b0, even.b1, odd.b1
    hi = __byte_perm(even, odd, 0x7362);           // even.b2, odd.b2, even.b3, odd.b3
}

}  // namespace w4
}  // namespace kernels
}  // namespace edge_quamba
