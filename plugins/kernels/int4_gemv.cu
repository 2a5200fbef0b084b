// The W4A8 decode GEMV of the 4-bit-weight linears (int4_linear.h): __dp4a, bit-exact group order. Plain CUDA C++
// (no inline PTX: it runs under the CPU kernel emulator); the W4A16 GEMVs are in int4_gemv_f16.cu.
//
// W4A8 GEMV, memory layout and work split:
//   A block of 256 threads owns R = 256 / TPR weight rows (TPR a power of two, chosen at launch); the TPR threads of
//   a row split its packed bytes into chunks of CPC codes (CPC = 32, 16, 8: 16-, 8-, 4-byte weight loads, the
//   widest that K, the group size, x's stride and the pointers allow; CPC = 1 reads one code at a time, for odd
//   shapes): thread `lane` takes chunks lane, lane + TPR, ..., kUnroll of them loaded before any is used, coalesced
//   as in the int8 GEMV. A chunk never straddles a group (CPC divides the group size). Each chunk's int32 dot
//   product (unpacked to 16 * code, int4_common.cuh, then __dp4a) is summed over the `team` of adjacent lanes
//   whose chunks always share a group (shuffles), and the team's first lane adds it into the per-(row, x row, group)
//   sum: when a team covers whole groups (team == CPC-chunks per group, e.g. groups of 64 codes read 16 bytes a lane
//   by teams of 2), the team's first lane forms the group's float term float32(acc_g) * float32(x_scale * w_scale)
//   at once, the scale loaded with the weights, and stores it in shared memory (no zeroing, no atomics, no global
//   load before the weight loads); for wider groups it adds the int32 sum into shared memory with an integer atomic
//   (exact, in any order; these sums are zeroed first) and the terms are formed in the walk. After a barrier, one
//   thread per (weight row, x row) adds the terms in ascending group order: y = term_0, y = y + term_g, then + bias
//   and the float32 or quantized store (decode fusions as in the int8 GEMV: the residual add, the conv step of a conv
//   column). blockIdx.y walks x rows in passes of MB (1 or 4) rows, as in the int8 GEMV.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "conv_step.cuh"
#include "int4_common.cuh"
#include "numerics.cuh"

namespace edge_quamba {
namespace kernels {
namespace w4 {
namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 4;
constexpr int kMinBlocks = 5;  // resident blocks per SM the registers must allow (<= 51 a thread): 660 on an H100
constexpr int kMaxSharedBytes = 48 * 1024;

// A chunk of CPC codes: CPC / 8 words of w_packed and CPC bytes of x.
template <int CPC> struct Chunk {
    uint32_t w[CPC / 8];
};
template <> struct Chunk<1> {
    uint32_t w[1];
};

template <int CPC>
__device__ __forceinline__ Chunk<CPC> load_w(const uint8_t* __restrict__ wrow, int c) {
    Chunk<CPC> out;
    if constexpr (CPC == 32) {
        const uint4 v = __ldcs(reinterpret_cast<const uint4*>(wrow) + c);
        out.w[0] = v.x; out.w[1] = v.y; out.w[2] = v.z; out.w[3] = v.w;
    } else if constexpr (CPC == 16) {
        const uint2 v = __ldcs(reinterpret_cast<const uint2*>(wrow) + c);
        out.w[0] = v.x; out.w[1] = v.y;
    } else if constexpr (CPC == 8) {
        out.w[0] = __ldcs(reinterpret_cast<const unsigned int*>(wrow) + c);
    } else {
        out.w[0] = __ldg(wrow + (c >> 1));  // the byte holding code c
    }
    return out;
}

// 16 * (exact int32 dot product of chunk c's codes with the x row's codes at the same columns).
template <int CPC>
__device__ __forceinline__ int dot16(const Chunk<CPC>& wc, const int8_t* __restrict__ xrow, int c) {
    if constexpr (CPC == 1) {
        const uint32_t b = wc.w[0];
        const int code16 = (c & 1) ? static_cast<int8_t>(b & 0xF0u) : static_cast<int8_t>((b << 4) & 0xF0u);
        return code16 * static_cast<int>(__ldg(xrow + c));
    } else {
        uint32_t xw[CPC / 4];
        if constexpr (CPC == 32) {
            const int4* xp = reinterpret_cast<const int4*>(xrow + int64_t(c) * 32);
            const int4 a = __ldg(xp), b = __ldg(xp + 1);
            xw[0] = a.x; xw[1] = a.y; xw[2] = a.z; xw[3] = a.w; xw[4] = b.x; xw[5] = b.y; xw[6] = b.z; xw[7] = b.w;
        } else {
            const int2* xp = reinterpret_cast<const int2*>(xrow + int64_t(c) * CPC);
#pragma unroll
            for (int i = 0; i < CPC / 8; ++i) {
                const int2 v = __ldg(xp + i);
                xw[2 * i] = v.x; xw[2 * i + 1] = v.y;
            }
        }
        int acc = 0;
#pragma unroll
        for (int i = 0; i < CPC / 8; ++i) {
            uint32_t lo, hi;
            unpack8_x16(wc.w[i], lo, hi);
            acc = __dp4a(static_cast<int>(lo), static_cast<int>(xw[2 * i]), acc);
            acc = __dp4a(static_cast<int>(hi), static_cast<int>(xw[2 * i + 1]), acc);
        }
        return acc;
    }
}

// Group g's term of the reference's sum (int4_linear.h): float32(acc_g) * float32(x_scale * w_scale[n, g]), from
// sum16 = 16 * acc_g (exact, so the shift is exact).
__device__ __forceinline__ float group_term(int sum16, float x_scale, float w_scale) {
    return __fmul_rn(__int2float_rn(sum16 >> 4), __fmul_rn(x_scale, w_scale));
}

// WHOLE (team == chunks per group): every group's chunks are read by one team of lanes in one step, so the team's
// first lane forms the group's float term at once (its scale loaded with its weights) and stores it; nothing is
// zeroed and no atomics. Otherwise (groups wider than a team) integer atomics gather the group sums first and the
// walk forms the terms. Either way the walk adds the terms in ascending group order: the same rounded operations.
template <int CPC, int MB, bool QUANT, bool WHOLE>
__global__ void __launch_bounds__(kThreads, kMinBlocks) w4a8_gemv_kernel(Problem p, int tpr_log2) {
    wait_for_producer();  // PDL (common.h): nothing read or written before the previous kernel is done
    extern __shared__ int smem[];  // [rows][MB][G]: float terms (WHOLE) or int32 sums of 16 * code * x
    float* terms = reinterpret_cast<float*>(smem);
    const int tpr = 1 << tpr_log2;
    const int rows = kThreads >> tpr_log2;
    const int G = p.groups;
    const int n0 = blockIdx.x * rows;
    const int64_t m0 = int64_t(blockIdx.y) * MB;
    if constexpr (!WHOLE) {  // no global load before this barrier: the weight loads below start at once
        for (int i = threadIdx.x; i < rows * MB * G; i += kThreads) smem[i] = 0;
        __syncthreads();
    }

    const int lane = threadIdx.x & (tpr - 1);
    const int r = threadIdx.x >> tpr_log2;
    const bool row_ok = n0 + r < p.N;
    const int chunks = p.K / CPC;      // CPC divides K (launcher)
    const int q = p.group_size / CPC;  // chunks per group (CPC divides the group size)
    const int team = min(q & -q, min(tpr, 32));  // aligned lanes whose chunks always lie in one group
    const int q_log2 = __ffs(q) - 1;             // WHOLE: q is a power of two, c / q = c >> q_log2
    const int64_t n = row_ok ? n0 + r : 0;
    const uint8_t* wrow = p.w + n * ((p.K + 1) / 2);
    const float* srow = p.scale + n * G;
    const int8_t* xrow[MB];
#pragma unroll
    for (int mb = 0; mb < MB; ++mb) {
        const int64_t m = min(m0 + mb, p.M - 1);  // rows past M repeat the last one; never written
        xrow[mb] = static_cast<const int8_t*>(p.x) + m * p.x_row_stride;
    }
    int* row_smem = smem + r * MB * G;

    for (int base = 0; base < chunks; base += kUnroll * tpr) {  // uniform trip count: shuffles below are safe
        Chunk<CPC> wc[kUnroll];
        float sc[kUnroll];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {  // issue all weight (and, WHOLE, scale) loads first
            const int c = base + u * tpr + lane;
            if (row_ok && c < chunks) {
                wc[u] = load_w<CPC>(wrow, c);
                if constexpr (WHOLE) sc[u] = __ldg(srow + (c >> q_log2));
            }
        }
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
            const int c = base + u * tpr + lane;
            const bool ok = row_ok && c < chunks;
            int acc[MB];
#pragma unroll
            for (int mb = 0; mb < MB; ++mb) acc[mb] = ok ? dot16<CPC>(wc[u], xrow[mb], c) : 0;
            for (int off = 1; off < team; off <<= 1) {
#pragma unroll
                for (int mb = 0; mb < MB; ++mb) acc[mb] += __shfl_xor_sync(0xffffffffu, acc[mb], off);
            }
            if (ok && (lane & (team - 1)) == 0) {
                const int g = WHOLE ? c >> q_log2 : c / q;
#pragma unroll
                for (int mb = 0; mb < MB; ++mb) {
                    if constexpr (WHOLE) terms[(r * MB + mb) * G + g] = group_term(acc[mb], p.x_scale, sc[u]);
                    else atomicAdd(row_smem + mb * G + g, acc[mb]);
                }
            }
        }
    }
    __syncthreads();

    // The group order of the reference, one thread per (weight row, x row).
    for (int i = threadIdx.x; i < rows * MB; i += kThreads) {
        const int rr = i / MB, mb = i % MB;
        const int nn = n0 + rr;
        const int64_t m = m0 + mb;
        if (nn >= p.N || m >= p.M) continue;
        float y;
        if constexpr (WHOLE) {
            const float* t = terms + (rr * MB + mb) * G;
            y = t[0];
            for (int g = 1; g < G; ++g) y = __fadd_rn(y, t[g]);
        } else {
            const int* s = smem + (rr * MB + mb) * G;
            const float* sr = p.scale + int64_t(nn) * G;
            y = group_term(s[0], p.x_scale, __ldg(sr));
            for (int g = 1; g < G; ++g) y = __fadd_rn(y, group_term(s[g], p.x_scale, __ldg(sr + g)));
        }
        if (p.bias != nullptr) y = __fadd_rn(y, __ldg(p.bias + nn));
        if constexpr (QUANT) {
            const int8_t q = quantize_rn(y, column_out_scale(p.out_segments, p.out_scale, nn));
            static_cast<int8_t*>(p.y)[m * p.y_row_stride + nn] = q;
            if (nn >= p.conv_begin && nn < p.conv_begin + p.conv.dim) conv_step(p.conv, m, nn - p.conv_begin, q);
        } else {
            if (p.residual != nullptr) y = __fadd_rn(__ldg(p.residual + m * p.residual_row_stride + nn), y);
            static_cast<float*>(p.y)[m * p.y_row_stride + nn] = y;
        }
    }
}

int shared_bytes(int rows, int mb, int groups) { return rows * mb * groups * 4; }

// Threads per row: ~8 chunks per thread, more while the grid is small (split-K for short N), more while the
// block's per-group sums do not fit the shared memory.
int choose_tpr_log2(int64_t chunks, int N, int mb, int groups) {
    int log2 = 2;
    while (log2 < 8 && (int64_t(8) << log2) < chunks) ++log2;
    while (log2 < 8 && (int64_t(N) << log2) < 128 * 1024 && chunks >= (int64_t(2) << log2)) ++log2;
    while (log2 < 8 && shared_bytes(kThreads >> log2, mb, groups) > kMaxSharedBytes) ++log2;
    return log2;
}

template <int CPC, int MB, bool QUANT>
cudaError_t launch_cpc_mb(const Problem& p, cudaStream_t stream) {
    const int log2 = choose_tpr_log2(p.K / CPC, p.N, MB, p.groups);
    const int rows = kThreads >> log2;
    const int bytes = shared_bytes(rows, MB, p.groups);
    if (bytes > kMaxSharedBytes || (p.M - 1) / MB + 1 > 65535) return cudaErrorInvalidValue;
    const dim3 grid((p.N + rows - 1) / rows, static_cast<unsigned>((p.M + MB - 1) / MB));
    const int q = p.group_size / CPC;
    if ((q & (q - 1)) == 0 && q <= std::min(1 << log2, 32)) {  // team == q: WHOLE groups per team
        return launch_kernel(w4a8_gemv_kernel<CPC, MB, QUANT, true>, grid, kThreads, bytes, stream, p, log2);
    }
    return launch_kernel(w4a8_gemv_kernel<CPC, MB, QUANT, false>, grid, kThreads, bytes, stream, p, log2);
}

template <int CPC, bool QUANT>
cudaError_t launch_cpc(const Problem& p, cudaStream_t stream) {
    // 4 x rows per pass, unless that many per-group sums do not fit (then one row per pass).
    if (p.M > 1 && shared_bytes(1, 4, p.groups) <= kMaxSharedBytes) return launch_cpc_mb<CPC, 4, QUANT>(p, stream);
    return launch_cpc_mb<CPC, 1, QUANT>(p, stream);
}

bool aligned(const void* ptr, int v) { return reinterpret_cast<uintptr_t>(ptr) % v == 0; }

template <bool QUANT>
cudaError_t launch_w4a8_gemv_t(const Problem& p, cudaStream_t stream) {
    const auto fits = [&](int cpc, int x_align) {
        return p.K % cpc == 0 && p.group_size % cpc == 0 && p.x_row_stride % x_align == 0 &&
               aligned(p.x, x_align) && aligned(p.w, cpc / 2);
    };
    if (fits(32, 16)) return launch_cpc<32, QUANT>(p, stream);
    if (fits(16, 8)) return launch_cpc<16, QUANT>(p, stream);
    if (fits(8, 8)) return launch_cpc<8, QUANT>(p, stream);
    return launch_cpc<1, QUANT>(p, stream);
}

}  // namespace

cudaError_t launch_w4a8_gemv(const Problem& p, bool quantize, cudaStream_t stream) {
    return quantize ? launch_w4a8_gemv_t<true>(p, stream) : launch_w4a8_gemv_t<false>(p, stream);
}

}  // namespace w4
}  // namespace kernels
}  // namespace edge_quamba
