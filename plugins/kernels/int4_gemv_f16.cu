// The W4A16 decode GEMVs of the 4-bit-weight linears (int4_linear.h): mma.sync float16, plus a one-warp-per-output
// kernel for shapes the tensor-core path does not take.
//
// W4A16 GEMV: a block of 8 warps owns 16 weight rows (the 16-row A operand of mma m16n8k16) and up to 8 x rows (the
//   8 columns of B; blockIdx.y walks passes of 8); the warps split the groups of K evenly, in order. In a group,
//   step j gives thread t (of the 4 threads sharing a fragment row) word 4j + t of the group: 8 codes of each of its
//   two weight rows and the same 8 columns of its x row (16 bytes of float16), i.e. two k16 mma steps whose 16
//   columns all lie in the group. kPrefetch words are loaded before they are used. At the end of a group the
//   float32 accumulators are multiplied by the group's scales and added to the warp's sums; the block adds its
//   warps' sums in warp order (shared memory), then bias, then one rounding to float16.
#include <algorithm>
#include <cstdint>

#include "int4_mma.cuh"
#include "numerics.cuh"

namespace edge_quamba {
namespace kernels {
namespace w4 {
namespace {

constexpr int kW16Warps = 8;
constexpr int kPrefetch = 8;  // words (8 codes of two weight rows + 8 x values) in flight per thread

__global__ void __launch_bounds__(kW16Warps * 32) w4a16_gemv_kernel(Problem p) {
    __shared__ float partial[kW16Warps][16][8];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int gid = lane >> 2, t = lane & 3;
    const int n0 = blockIdx.x * 16;
    const int64_t m0 = int64_t(blockIdx.y) * 8;
    const int G = p.groups;
    const int g_lo = static_cast<int>(int64_t(G) * warp / kW16Warps);
    const int g_hi = static_cast<int>(int64_t(G) * (warp + 1) / kW16Warps);
    const int steps_per_group = p.group_size / 32;  // steps j per full group (4 words each: one per thread t)
    const int last_steps = (p.K - (G - 1) * p.group_size) / 32;
    const int total = g_hi <= g_lo ? 0
                    : (g_hi - g_lo - 1) * steps_per_group + (g_hi == G ? last_steps : steps_per_group);

    const int row0 = n0 + gid, row1 = n0 + gid + 8;
    const bool ok0 = row0 < p.N, ok1 = row1 < p.N;
    const int64_t row_words = p.K / 8;  // 32-bit words per packed row
    const uint32_t* w0 = reinterpret_cast<const uint32_t*>(p.w) + (ok0 ? row0 : 0) * row_words;
    const uint32_t* w1 = reinterpret_cast<const uint32_t*>(p.w) + (ok1 ? row1 : 0) * row_words;
    const bool x_ok = m0 + gid < p.M;
    const __half* xrow = static_cast<const __half*>(p.x) + (x_ok ? m0 + gid : 0) * p.x_row_stride;

    float y[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int f0 = 0; f0 < total; f0 += kPrefetch) {
        uint32_t a0[kPrefetch], a1[kPrefetch];
        uint4 xv[kPrefetch];
        float s0[kPrefetch], s1[kPrefetch];
#pragma unroll
        for (int i = 0; i < kPrefetch; ++i) {
            const int f = f0 + i;
            if (f < total) {
                const int g = g_lo + f / steps_per_group, j = f % steps_per_group;
                const int64_t word = (int64_t(g) * steps_per_group + j) * 4 + t;  // 32-bit word of the packed row
                a0[i] = ok0 ? __ldcs(w0 + word) : 0u;
                a1[i] = ok1 ? __ldcs(w1 + word) : 0u;
                xv[i] = x_ok ? __ldg(reinterpret_cast<const uint4*>(xrow + 8 * word)) : make_uint4(0, 0, 0, 0);
                s0[i] = ok0 ? __ldg(p.scale + int64_t(row0) * G + g) : 0.0f;
                s1[i] = ok1 ? __ldg(p.scale + int64_t(row1) * G + g) : 0.0f;
            }
        }
#pragma unroll
        for (int i = 0; i < kPrefetch; ++i) {
            const int f = f0 + i;
            if (f < total) {  // warp-uniform
                const uint32_t h0 = a0[i] >> 4, h1 = a1[i] >> 4;
                const uint32_t A0[4] = {pair_f16(a0[i], h0, 0), pair_f16(a1[i], h1, 0), pair_f16(a0[i], h0, 1),
                                        pair_f16(a1[i], h1, 1)};
                mma_f16(d, A0, xv[i].x, xv[i].y);  // codes 0-3 of the word
                const uint32_t A1[4] = {pair_f16(a0[i], h0, 2), pair_f16(a1[i], h1, 2), pair_f16(a0[i], h0, 3),
                                        pair_f16(a1[i], h1, 3)};
                mma_f16(d, A1, xv[i].z, xv[i].w);  // codes 4-7
                const int g = g_lo + f / steps_per_group, j = f % steps_per_group;
                const int steps = g == G - 1 ? last_steps : steps_per_group;
                if (j == steps - 1) {  // the group ends: scale its sums, add them, restart
                    y[0] = __fadd_rn(y[0], __fmul_rn(d[0], s0[i]));
                    y[1] = __fadd_rn(y[1], __fmul_rn(d[1], s0[i]));
                    y[2] = __fadd_rn(y[2], __fmul_rn(d[2], s1[i]));
                    y[3] = __fadd_rn(y[3], __fmul_rn(d[3], s1[i]));
                    d[0] = d[1] = d[2] = d[3] = 0.0f;
                }
            }
        }
    }
    // d: rows gid, gid + 8 of the tile; columns (x rows) 2t, 2t + 1.
    partial[warp][gid][2 * t] = y[0];
    partial[warp][gid][2 * t + 1] = y[1];
    partial[warp][gid + 8][2 * t] = y[2];
    partial[warp][gid + 8][2 * t + 1] = y[3];
    __syncthreads();
    if (threadIdx.x < 128) {
        const int r = threadIdx.x >> 3, col = threadIdx.x & 7;
        const int n = n0 + r;
        const int64_t m = m0 + col;
        if (n < p.N && m < p.M) {
            float v = partial[0][r][col];
#pragma unroll
            for (int w = 1; w < kW16Warps; ++w) v = __fadd_rn(v, partial[w][r][col]);
            if (p.bias != nullptr) v = __fadd_rn(v, __ldg(p.bias + n));
            static_cast<__half*>(p.y)[m * p.y_row_stride + n] = __float2half_rn(v);
        }
    }
}

// One warp per output (x row m, weight row n): lanes stride over K, w_hat = float32(code) * scale (the
// reference's dequantization), products and sums in float32, a shuffle tree, + bias, one rounding to float16.
__global__ void __launch_bounds__(256) w4a16_generic_kernel(Problem p) {
    const int lane = threadIdx.x & 31;
    const int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32);
    const int64_t row_bytes = (p.K + 1) / 2;
    for (int64_t o = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32; o < p.M * p.N; o += warps) {
        const int n = static_cast<int>(o % p.N);
        const int64_t m = o / p.N;
        const __half* xrow = static_cast<const __half*>(p.x) + m * p.x_row_stride;
        const uint8_t* wrow = p.w + n * row_bytes;
        const float* srow = p.scale + int64_t(n) * p.groups;
        float acc = 0.0f;
        for (int k = lane; k < p.K; k += 32) {
            const uint32_t b = __ldg(wrow + (k >> 1));
            const int code = static_cast<int8_t>(((k & 1) ? b : (b << 4)) & 0xF0u) >> 4;
            const float w_hat = __fmul_rn(static_cast<float>(code), __ldg(srow + k / p.group_size));
            acc = __fadd_rn(acc, __fmul_rn(__half2float(xrow[k]), w_hat));
        }
#pragma unroll
        for (int off = 16; off > 0; off /= 2) acc = __fadd_rn(acc, __shfl_xor_sync(0xffffffffu, acc, off));
        if (lane == 0) {
            if (p.bias != nullptr) acc = __fadd_rn(acc, __ldg(p.bias + n));
            static_cast<__half*>(p.y)[m * p.y_row_stride + n] = __float2half_rn(acc);
        }
    }
}

}  // namespace

cudaError_t launch_w4a16_gemv(const Problem& p, cudaStream_t stream) {
    if ((p.M - 1) / 8 + 1 > 65535) return cudaErrorInvalidValue;
    const dim3 grid((p.N + 15) / 16, static_cast<unsigned>((p.M + 7) / 8));
    w4a16_gemv_kernel<<<grid, kW16Warps * 32, 0, stream>>>(p);
    return cudaGetLastError();
}

cudaError_t launch_w4a16_generic(const Problem& p, cudaStream_t stream) {
    const int64_t blocks = std::min<int64_t>((p.M * p.N + 7) / 8, 65536);
    w4a16_generic_kernel<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(p);
    return cudaGetLastError();
}

}  // namespace w4
}  // namespace kernels
}  // namespace edge_quamba
