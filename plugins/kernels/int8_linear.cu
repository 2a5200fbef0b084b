// int8_linear / int8_linear_quantize decode GEMV and the int32 -> int8 prefill epilogue; see int8_linear.h.
//
// Memory layout and work split:
//   w (N, K) int8 row-major: each output feature n is one contiguous row of K bytes.
//   A block of 256 threads owns R = 256 / TPR weight rows; the TPR threads of a row split K: thread `lane` reads
//   VEC-byte chunks lane, lane + TPR, lane + 2 TPR, ... (coalesced: the group reads TPR * VEC consecutive bytes per
//   step), kUnroll chunks issued before any is used so that many 16-byte loads are in flight per thread.
//   blockIdx.y walks x rows in passes of MB rows; every weight chunk is multiplied with the MB x rows it meets
//   (x is tiny and stays in L1/L2; the weight is streamed once per pass, with the evict-first hint __ldcs).
//   TPR is chosen so that short, tall layers (x_proj: N = 192, K = 5120) still spread over many threads
//   (split-K up to 256 threads per row) and long, wide layers keep 8-16 chunks per thread.
// Numerics: int32 dot products (__dp4a), exact, reduced in any order (integer addition is associative); the
// epilogue is float32(acc) * alpha then + bias, each rounded (no FMA), alpha = x_scale * weight_scale in float32;
// int8_linear_quantize's epilogue (template flag QUANT) then divides by out_scale (or by its column segment's scale,
// OutScaleSegments) and rounds (quantize_rn). A per-row input scale (x_scale_rows, int8_linear only) replaces alpha
// by float32(x_scale_rows[m] * weight_scale) for row m. Decode fusions in the same epilogue thread: the causal conv
// step of a conv column (QUANT, conv_step.cuh), and the residual add (int8_linear: y = residual + y, rounded).
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "conv_step.cuh"
#include "int8_linear.h"
#include "numerics.cuh"

namespace edge_quamba {
namespace kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 4;

// What both GEMV launchers describe: y (float32) or y_q (int8) is written, by the template flag QUANT.
struct Gemv {
    int64_t M;
    int N, K;
    const int8_t* x;
    int64_t x_row_stride;
    const int8_t* w;
    const float* bias;
    float* y;
    int8_t* y_q;
    int64_t y_row_stride;
    float x_scale, weight_scale, out_scale;
    const float* x_scale_rows;  // per-row input scales or nullptr (int8_linear only)
    const float* residual;      // int8_linear only: added to y (or nullptr)
    int64_t residual_row_stride;
    OutScaleSegments out_segments;  // QUANT only: a scale per column segment (count 0: out_scale)
    int conv_begin;                 // QUANT only: the conv step over columns [conv_begin, + conv.dim) (int8_linear.h)
    CausalConv1dParams conv;
};

template <int VEC> struct Chunk;
template <> struct Chunk<16> { using T = int4; };
template <> struct Chunk<8> { using T = int2; };
template <> struct Chunk<4> { using T = int; };
template <> struct Chunk<1> { using T = int8_t; };

__device__ __forceinline__ int dot(int4 a, int4 b, int acc) {
    acc = __dp4a(a.x, b.x, acc); acc = __dp4a(a.y, b.y, acc);
    acc = __dp4a(a.z, b.z, acc); return __dp4a(a.w, b.w, acc);
}
__device__ __forceinline__ int dot(int2 a, int2 b, int acc) { return __dp4a(a.y, b.y, __dp4a(a.x, b.x, acc)); }
__device__ __forceinline__ int dot(int a, int b, int acc) { return __dp4a(a, b, acc); }
__device__ __forceinline__ int dot(int8_t a, int8_t b, int acc) { return acc + int(a) * int(b); }

template <int VEC, int TPR, int MB, bool QUANT>
__global__ void __launch_bounds__(kThreads) int8_gemv_kernel(Gemv p) {
    using T = typename Chunk<VEC>::T;
    constexpr int kRowsPerBlock = kThreads / TPR;
    const int lane = threadIdx.x % TPR;
    const int n = blockIdx.x * kRowsPerBlock + threadIdx.x / TPR;
    const int64_t m0 = int64_t(blockIdx.y) * MB;
    const bool row_ok = n < p.N;
    const int chunks = p.K / VEC;  // K % VEC == 0 (checked by the launcher)

    const T* __restrict__ w = reinterpret_cast<const T*>(p.w + int64_t(row_ok ? n : 0) * p.K);
    const T* xrow[MB];
#pragma unroll
    for (int mb = 0; mb < MB; ++mb) {
        const int64_t m = min(m0 + mb, p.M - 1);  // rows past M repeat the last one; never written
        xrow[mb] = reinterpret_cast<const T*>(p.x + m * p.x_row_stride);
    }

    int acc[MB];
#pragma unroll
    for (int mb = 0; mb < MB; ++mb) acc[mb] = 0;

    // PDL (common.h): the first kUnroll weight chunks are loaded before waiting for the previous kernel (no kernel
    // writes a weight); x is read and y written only after the wait.
    T wv[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
        const int c = lane + u * TPR;
        if (row_ok && c < chunks) wv[u] = __ldcs(w + c);
    }
    wait_for_producer();

    if (row_ok) {
        for (int c0 = lane; c0 < chunks; c0 += kUnroll * TPR) {
            if (c0 != lane) {
#pragma unroll
                for (int u = 0; u < kUnroll; ++u) {  // issue all weight loads first
                    const int c = c0 + u * TPR;
                    if (c < chunks) wv[u] = __ldcs(w + c);
                }
            }
#pragma unroll
            for (int u = 0; u < kUnroll; ++u) {
                const int c = c0 + u * TPR;
                if (c < chunks) {
#pragma unroll
                    for (int mb = 0; mb < MB; ++mb) acc[mb] = dot(wv[u], __ldg(xrow[mb] + c), acc[mb]);
                }
            }
        }
    }

    // Reduce the TPR partial sums of each row: shuffles inside a warp, then shared memory across warps.
#pragma unroll
    for (int mb = 0; mb < MB; ++mb) {
#pragma unroll
        for (int off = (TPR < 32 ? TPR : 32) / 2; off > 0; off /= 2) {
            acc[mb] += __shfl_xor_sync(0xffffffffu, acc[mb], off);
        }
    }
    if constexpr (TPR > 32) {
        constexpr int kWarpsPerRow = TPR / 32;
        __shared__ int partial[kThreads / 32][MB];
        const int warp = threadIdx.x / 32;
        if (threadIdx.x % 32 == 0) {
#pragma unroll
            for (int mb = 0; mb < MB; ++mb) partial[warp][mb] = acc[mb];
        }
        __syncthreads();
        if (lane == 0) {
#pragma unroll
            for (int mb = 0; mb < MB; ++mb) {
                int s = 0;
                for (int i = 0; i < kWarpsPerRow; ++i) s += partial[warp + i][mb];
                acc[mb] = s;
            }
        }
    }

    if (lane == 0 && row_ok) {
        const float alpha = __fmul_rn(p.x_scale, p.weight_scale);
        const float b = p.bias != nullptr ? p.bias[n] : 0.0f;
        const float out_scale = column_out_scale(p.out_segments, p.out_scale, n);
#pragma unroll
        for (int mb = 0; mb < MB; ++mb) {
            if (m0 + mb < p.M) {
                const float alpha_m = p.x_scale_rows != nullptr ? __fmul_rn(__ldg(p.x_scale_rows + m0 + mb),
                                                                            p.weight_scale) : alpha;
                float v = __fmul_rn(static_cast<float>(acc[mb]), alpha_m);
                if (p.bias != nullptr) v = __fadd_rn(v, b);
                if constexpr (QUANT) {
                    const int8_t q = quantize_rn(v, out_scale);
                    p.y_q[(m0 + mb) * p.y_row_stride + n] = q;
                    if (n >= p.conv_begin && n < p.conv_begin + p.conv.dim) {
                        conv_step(p.conv, m0 + mb, n - p.conv_begin, q);
                    }
                } else {
                    if (p.residual != nullptr) {
                        v = __fadd_rn(__ldg(p.residual + (m0 + mb) * p.residual_row_stride + n), v);
                    }
                    p.y[(m0 + mb) * p.y_row_stride + n] = v;
                }
            }
        }
    }
}

// Threads per row: at least 8 chunks per thread (the 2.8b in_proj, 160 chunks: 16 threads a row, 640 blocks, one
// wave at 5 blocks a multiprocessor; with ~5 chunks a thread it was 1280 blocks in 1.6 waves), then more threads
// while the grid is small (split-K for short N).
int choose_tpr(int64_t chunks, int N) {
    int tpr = 4;
    while (tpr < kThreads && tpr * 16 <= chunks) tpr *= 2;
    while (tpr < kThreads && int64_t(N) * tpr < 128 * 1024 && chunks >= 2 * tpr) tpr *= 2;
    return tpr;
}

template <int VEC, int TPR, bool QUANT>
cudaError_t launch_mb(const Gemv& p, cudaStream_t stream) {
    const int mb = p.M == 1 ? 1 : 4;
    const dim3 grid((p.N + kThreads / TPR - 1) / (kThreads / TPR), static_cast<unsigned>((p.M + mb - 1) / mb));
    if (mb == 1) return launch_kernel(int8_gemv_kernel<VEC, TPR, 1, QUANT>, grid, kThreads, 0, stream, p);
    return launch_kernel(int8_gemv_kernel<VEC, TPR, 4, QUANT>, grid, kThreads, 0, stream, p);
}

template <int VEC, bool QUANT>
cudaError_t launch_vec(const Gemv& p, cudaStream_t stream) {
    switch (choose_tpr(p.K / VEC, p.N)) {
        case 4: return launch_mb<VEC, 4, QUANT>(p, stream);
        case 8: return launch_mb<VEC, 8, QUANT>(p, stream);
        case 16: return launch_mb<VEC, 16, QUANT>(p, stream);
        case 32: return launch_mb<VEC, 32, QUANT>(p, stream);
        case 64: return launch_mb<VEC, 64, QUANT>(p, stream);
        case 128: return launch_mb<VEC, 128, QUANT>(p, stream);
        default: return launch_mb<VEC, 256, QUANT>(p, stream);
    }
}

bool aligned(const void* ptr, int v) { return reinterpret_cast<uintptr_t>(ptr) % v == 0; }

template <bool QUANT>
cudaError_t launch_gemv(const Gemv& p, cudaStream_t stream) {
    if (p.M < 0 || p.N < 0 || p.K < 1 || p.K > 131071 || p.x_row_stride < p.K || p.y_row_stride < p.N) {
        return cudaErrorInvalidValue;
    }
    if (QUANT && !valid_out_scales(p.out_segments, p.out_scale, p.N)) return cudaErrorInvalidValue;
    if (p.conv.dim != 0 &&
        (!QUANT || !valid_conv_step(p.conv, p.conv_begin, p.out_segments, p.out_scale, p.N))) {
        return cudaErrorInvalidValue;
    }
    if (p.residual != nullptr && (QUANT || p.residual_row_stride < p.N)) return cudaErrorInvalidValue;
    if (p.M == 0 || p.N == 0) return cudaSuccess;
    if (p.x == nullptr || p.w == nullptr || (QUANT ? p.y_q == nullptr : p.y == nullptr) ||
        (p.M - 1) / 4 + 1 > 65535) {
        return cudaErrorInvalidValue;
    }
    // Widest load that K, the x row stride and both base pointers allow.
    for (int v : {16, 8, 4}) {
        if (p.K % v == 0 && p.x_row_stride % v == 0 && aligned(p.x, v) && aligned(p.w, v)) {
            if (v == 16) return launch_vec<16, QUANT>(p, stream);
            if (v == 8) return launch_vec<8, QUANT>(p, stream);
            return launch_vec<4, QUANT>(p, stream);
        }
    }
    return launch_vec<1, QUANT>(p, stream);
}

// Prefill epilogue: 4 consecutive accumulators per thread (16-byte load, 4-byte store; N % 4 == 0 checked by the
// launcher), grid-stride over the (M, N) matrix; the same rounded ops as the GEMV epilogue, then quantize_rn.
__global__ void int32_epilogue_quantize_kernel(Int32EpilogueQuantizeParams p) {
    wait_for_producer();  // PDL (common.h): nothing read or written before the previous kernel is done
    const float alpha = __fmul_rn(p.x_scale, p.weight_scale);
    const int64_t groups = p.M * (p.N / 4);
    for (int64_t g = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; g < groups;
         g += int64_t(gridDim.x) * blockDim.x) {
        const int4 a = __ldcs(reinterpret_cast<const int4*>(p.acc) + g);
        const int n0 = static_cast<int>((g * 4) % p.N);
        const auto code = [&](int acc, int i) {
            float v = __fmul_rn(static_cast<float>(acc), alpha);
            if (p.bias != nullptr) v = __fadd_rn(v, __ldg(p.bias + n0 + i));
            return static_cast<signed char>(quantize_rn(v, column_out_scale(p.out_segments, p.out_scale, n0 + i)));
        };
        reinterpret_cast<char4*>(p.y_q)[g] = make_char4(code(a.x, 0), code(a.y, 1), code(a.z, 2), code(a.w, 3));
    }
}

}  // namespace

cudaError_t launch_int8_linear(const Int8LinearParams& p, cudaStream_t stream) {
    const Gemv g{p.M, p.N, p.K, p.x, p.x_row_stride, p.w, p.bias, p.y, nullptr, p.y_row_stride,
                 p.x_scale, p.weight_scale, 1.0f, p.x_scale_rows, p.residual, p.residual_row_stride,
                 OutScaleSegments{}, 0, CausalConv1dParams{}};
    return launch_gemv<false>(g, stream);
}

cudaError_t launch_int8_linear_quantize(const Int8LinearQuantizeParams& p, cudaStream_t stream) {
    const Gemv g{p.M, p.N, p.K, p.x, p.x_row_stride, p.w, p.bias, nullptr, p.y_q, p.y_row_stride,
                 p.x_scale, p.weight_scale, p.out_scale, nullptr, nullptr, 0, p.out_segments, p.conv_begin, p.conv};
    return launch_gemv<true>(g, stream);
}

cudaError_t launch_int32_epilogue_quantize(const Int32EpilogueQuantizeParams& p, cudaStream_t stream) {
    if (p.M < 0 || p.N < 0 || p.N % 4 != 0 || !valid_out_scales(p.out_segments, p.out_scale, p.N)) {
        return cudaErrorInvalidValue;
    }
    if (p.M == 0 || p.N == 0) return cudaSuccess;
    if (p.acc == nullptr || p.y_q == nullptr || !aligned(p.acc, 16) || !aligned(p.y_q, 4)) {
        return cudaErrorInvalidValue;
    }
    const int threads = 256;
    const int64_t groups = p.M * (p.N / 4);
    const int blocks = static_cast<int>(std::min<int64_t>((groups + threads - 1) / threads, 65536));
    return launch_kernel(int32_epilogue_quantize_kernel, blocks, threads, 0, stream, p);
}

}  // namespace kernels
}  // namespace edge_quamba
