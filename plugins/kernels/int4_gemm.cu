// Prefill GEMM of the 4-bit-weight linears (int4_linear.h); the public launchers (int4_linear.cu) dispatch between
// it and the GEMVs.
//
// GEMM, memory layout and work split (needs w4::tensor_core_shape):
//   A block of 4 warps computes a 64 (x rows) x 64 (weight rows) tile of y over the whole K, in steps of 32
//   columns: 64 x 32 x values (int8: 2 KB, float16: 4 KB) and 64 x 16 bytes of packed weights per step, copied
//   global -> shared with cp.async through a 4-stage ring (rows past M or N are zero-filled). Each warp owns a 32 x 32
//   sub-tile: two 16-row x fragments times four 8-row weight fragments.
//   Within a 32-column step thread t (of the 4 threads sharing a fragment row) takes columns 8t .. 8t + 7 (one
//   32-bit word of each packed weight row, 8 bytes of int8 or 16 bytes of float16 x): W4A8 feeds them to one int8
//   mma m16n8k32 as its column slots 4t..4t+3 and 16+4t..19+4t, W4A16 to two float16 mma m16n8k16 (columns 8t..8t+3
//   then 8t+4..8t+7 as slots 2t, 2t+1, 8+2t, 9+2t). A product's slots only need to pair the same x and weight column,
//   which this assignment does, and every column of the step is used once. Nibbles are unpacked in registers
//   (int4_common.cuh). Since the group size is a multiple of 32, a step never straddles a group.
//   After the last step of a group: W4A8: y = y + float32(acc >> 4) * float32(x_scale * scale[n, g]) per element
//   (y = that product for group 0), which is the reference's order exactly; W4A16: y = y + acc * scale[n, g]. The
//   group's scales are loaded into registers at its first step. The epilogue adds the bias and stores float32, int8
//   (quantize_rn) or float16.
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "int4_mma.cuh"
#include "numerics.cuh"

namespace edge_quamba {
namespace kernels {
namespace w4 {
namespace {

constexpr int kBM = 64, kBN = 64, kBK = 32, kStages = 4, kThreads = 128;

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool full) {
    const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
    const int src_bytes = full ? 16 : 0;  // 0: write 16 zero bytes, read nothing
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

template <Mode MODE>
__global__ void __launch_bounds__(kThreads) int4_gemm_kernel(Problem p) {
    constexpr bool kA16 = MODE == Mode::kW4A16;
    constexpr int kXBytes = kA16 ? 2 : 1;
    constexpr int kARow = kBK * kXBytes;  // bytes of one x row per step: 32 or 64
    __shared__ __align__(16) uint8_t sA[kStages][kBM * kARow];
    __shared__ __align__(16) uint8_t sB[kStages][kBN * 16];

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int gid = lane >> 2, t = lane & 3;
    const int wm = warp >> 1, wn = warp & 1;  // the warp's 32 x 32 sub-tile
    const int64_t m_base = int64_t(blockIdx.y) * kBM;
    const int n_base = blockIdx.x * kBN;
    const int steps = p.K / kBK;
    const int64_t w_row_bytes = p.K / 2;
    const uint8_t* x_bytes = static_cast<const uint8_t*>(p.x);

    const auto load_stage = [&](int buf, int step) {
        constexpr int kChunks = kARow / 16;  // 16-byte pieces per x row
        for (int i = tid; i < kBM * kChunks; i += kThreads) {
            const int r = i / kChunks, c = i % kChunks;
            const int64_t m = m_base + r;
            const bool ok = m < p.M;
            const uint8_t* src = x_bytes + ((ok ? m : 0) * p.x_row_stride + int64_t(step) * kBK) * kXBytes + c * 16;
            cp_async16(&sA[buf][r * kARow + c * 16], src, ok);
        }
        for (int i = tid; i < kBN; i += kThreads) {
            const int n = n_base + i;
            const bool ok = n < p.N;
            cp_async16(&sB[buf][i * 16], p.w + (ok ? n : 0) * w_row_bytes + step * (kBK / 2), ok);
        }
    };

    using Acc = typename std::conditional<kA16, float, int>::type;
    Acc acc[2][4][4];
    float y[2][4][4];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < 4; ++nt)
#pragma unroll
            for (int i = 0; i < 4; ++i) { acc[mt][nt][i] = 0; y[mt][nt][i] = 0.0f; }
    float scale[4][2];  // scale[n, g] of the thread's 8 weight columns (nt, 2t + e)

#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) {
        if (s < steps) load_stage(s, s);
        cp_async_commit();
    }
    for (int step = 0; step < steps; ++step) {
        cp_async_wait<kStages - 2>();
        __syncthreads();  // stage `step` landed for every thread; the buffer refilled below is no longer read
        if (step + kStages - 1 < steps) load_stage((step + kStages - 1) % kStages, step + kStages - 1);
        cp_async_commit();

        const int k0 = step * kBK;
        const int g = k0 / p.group_size;
        if (k0 % p.group_size == 0) {  // a group starts: its scales, used at its last step
#pragma unroll
            for (int nt = 0; nt < 4; ++nt)
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const int n = n_base + wn * 32 + nt * 8 + 2 * t + e;
                    scale[nt][e] = n < p.N ? __ldg(p.scale + int64_t(n) * p.groups + g) : 0.0f;
                }
        }

        const uint8_t* a_tile = sA[step % kStages];
        const uint8_t* b_tile = sB[step % kStages];
        uint32_t wv[4];
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) {
            wv[nt] = *reinterpret_cast<const uint32_t*>(b_tile + (wn * 32 + nt * 8 + gid) * 16 + 4 * t);
        }
        if constexpr (kA16) {
            uint4 lo[2], hi[2];  // x columns 8t .. 8t + 7 of fragment rows gid and gid + 8
#pragma unroll
            for (int mt = 0; mt < 2; ++mt) {
                const int row = wm * 32 + mt * 16 + gid;
                lo[mt] = *reinterpret_cast<const uint4*>(a_tile + row * kARow + 16 * t);
                hi[mt] = *reinterpret_cast<const uint4*>(a_tile + (row + 8) * kARow + 16 * t);
            }
#pragma unroll
            for (int nt = 0; nt < 4; ++nt) {
                const uint32_t w4 = wv[nt] >> 4;
                const uint32_t b[4] = {pair_f16(wv[nt], w4, 0), pair_f16(wv[nt], w4, 1), pair_f16(wv[nt], w4, 2),
                                       pair_f16(wv[nt], w4, 3)};
#pragma unroll
                for (int mt = 0; mt < 2; ++mt) {
                    const uint32_t a_first[4] = {lo[mt].x, hi[mt].x, lo[mt].y, hi[mt].y};   // columns 8t .. 8t+3
                    mma_f16(acc[mt][nt], a_first, b[0], b[1]);
                    const uint32_t a_second[4] = {lo[mt].z, hi[mt].z, lo[mt].w, hi[mt].w};  // 8t+4 .. 8t+7
                    mma_f16(acc[mt][nt], a_second, b[2], b[3]);
                }
            }
        } else {
            uint2 lo[2], hi[2];  // x columns 8t .. 8t + 7 of fragment rows gid and gid + 8
#pragma unroll
            for (int mt = 0; mt < 2; ++mt) {
                const int row = wm * 32 + mt * 16 + gid;
                lo[mt] = *reinterpret_cast<const uint2*>(a_tile + row * kARow + 8 * t);
                hi[mt] = *reinterpret_cast<const uint2*>(a_tile + (row + 8) * kARow + 8 * t);
            }
#pragma unroll
            for (int nt = 0; nt < 4; ++nt) {
                uint32_t b0, b1;
                unpack8_x16(wv[nt], b0, b1);
#pragma unroll
                for (int mt = 0; mt < 2; ++mt) {
                    const uint32_t a[4] = {lo[mt].x, hi[mt].x, lo[mt].y, hi[mt].y};
                    mma_s8(acc[mt][nt], a, b0, b1);
                }
            }
        }

        if ((k0 + kBK) % p.group_size == 0 || step == steps - 1) {  // the group ends
#pragma unroll
            for (int nt = 0; nt < 4; ++nt)
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    if constexpr (kA16) {
#pragma unroll
                        for (int mt = 0; mt < 2; ++mt)
#pragma unroll
                            for (int h = 0; h < 2; ++h) {
                                float& v = acc[mt][nt][2 * h + e];
                                y[mt][nt][2 * h + e] = __fadd_rn(y[mt][nt][2 * h + e], __fmul_rn(v, scale[nt][e]));
                                v = 0.0f;
                            }
                    } else {
                        const float alpha = __fmul_rn(p.x_scale, scale[nt][e]);
#pragma unroll
                        for (int mt = 0; mt < 2; ++mt)
#pragma unroll
                            for (int h = 0; h < 2; ++h) {
                                int& v = acc[mt][nt][2 * h + e];
                                const float term = __fmul_rn(__int2float_rn(v >> 4), alpha);
                                y[mt][nt][2 * h + e] = g == 0 ? term : __fadd_rn(y[mt][nt][2 * h + e], term);
                                v = 0;
                            }
                    }
                }
        }
    }
    cp_async_wait<0>();

    // Fragment element i of (mt, nt): x row gid (+ 8 for i >= 2), weight column 2t + (i & 1).
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < 4; ++nt)
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const int64_t m = m_base + wm * 32 + mt * 16 + gid + (i >= 2 ? 8 : 0);
                const int n = n_base + wn * 32 + nt * 8 + 2 * t + (i & 1);
                if (m >= p.M || n >= p.N) continue;
                float v = y[mt][nt][i];
                if (p.bias != nullptr) v = __fadd_rn(v, __ldg(p.bias + n));
                const int64_t o = m * p.y_row_stride + n;
                if constexpr (MODE == Mode::kW4A16) {
                    static_cast<__half*>(p.y)[o] = __float2half_rn(v);
                } else if constexpr (MODE == Mode::kW4A8Quantize) {
                    static_cast<int8_t*>(p.y)[o] = quantize_rn(v, column_out_scale(p.out_segments, p.out_scale, n));
                } else {
                    static_cast<float*>(p.y)[o] = v;
                }
            }
}

}  // namespace

cudaError_t launch_gemm(const Problem& p, Mode mode, cudaStream_t stream) {
    if ((p.M - 1) / kBM + 1 > 65535) return cudaErrorInvalidValue;
    const dim3 grid((p.N + kBN - 1) / kBN, static_cast<unsigned>((p.M + kBM - 1) / kBM));
    switch (mode) {
        case Mode::kW4A8: int4_gemm_kernel<Mode::kW4A8><<<grid, kThreads, 0, stream>>>(p); break;
        case Mode::kW4A8Quantize: int4_gemm_kernel<Mode::kW4A8Quantize><<<grid, kThreads, 0, stream>>>(p); break;
        case Mode::kW4A16: int4_gemm_kernel<Mode::kW4A16><<<grid, kThreads, 0, stream>>>(p); break;
    }
    return cudaGetLastError();
}

}  // namespace w4
}  // namespace kernels
}  // namespace edge_quamba
