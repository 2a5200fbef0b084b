// The inline-PTX helpers of the 4-bit tensor-core kernels (int4_gemv_f16.cu, int4_gemm.cu): float16 pairs of int4
// codes and the mma.sync fragments (int4_common.cuh has the layouts). Include from those .cu files only.
#pragma once

#include <cstdint>
#include <cuda_fp16.h>

#include "int4_common.cuh"

namespace edge_quamba {
namespace kernels {
namespace w4 {

// Codes 2i and 2i + 1 of a word (its byte i) as a float16 pair (low half = code 2i), exact; w4 = w >> 4.
__device__ __forceinline__ uint32_t pair_f16(uint32_t w, uint32_t w4, int i) {
    // byte 0 = byte i of w (low nibble: code 2i), byte 2 = byte i of w >> 4 (low nibble: code 2i + 1)
    const uint32_t p = __byte_perm(w, w4, static_cast<uint32_t>(i | ((i + 4) << 8)));
    const uint32_t biased = (p & 0x000F000Fu) ^ 0x64086408u;  // float16 1024 + (nibble ^ 8) = 1032 + code
    uint32_t out;
    asm("sub.rn.f16x2 %0, %1, %2;" : "=r"(out) : "r"(biased), "r"(0x64086408u));  // - 1032: the code
    return out;
}

// D (16 x 8, float32) += A (16 x 16, float16, row) * B (16 x 8, float16, col); fragment layout of the PTX ISA.
__device__ __forceinline__ void mma_f16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// D (16 x 8, int32) += A (16 x 32, int8, row) * B (32 x 8, int8, col), exact.
__device__ __forceinline__ void mma_s8(int (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

}  // namespace w4
}  // namespace kernels
}  // namespace edge_quamba
