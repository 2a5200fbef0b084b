// rms_norm_quantize; see rms_norm_quantize.h for the contract.
//
// Work split: one block of THREADS (256 .. 1024) threads per row, a single pass over x: thread t holds the elements
// t, t + THREADS, ... (coalesced loads, ITEMS <= 8 registers; few per thread, since at decode the one row's latency
// is the cost) and their weights, both loaded before the reduction; the block reduces the sums of squares (warp
// shuffles, then the warp sums in order by one thread), which computes mean and 1 / sqrt(mean + eps) once; every
// thread then normalizes, scales by weight and quantizes its registers, writing int8.
// gated_rms_norm_quantize: the same with one block per (row, group of group_size channels), the gate applied as the
// row is loaded (g = y * silu(q_z * z_scale)), the mean taken over the group.
#include <cmath>

#include "numerics.cuh"
#include "rms_norm_quantize.h"

namespace edge_quamba {
namespace kernels {
namespace {

// 1 / sqrt(sum / dim + eps) of the block's sums of squares (one partial per thread): warp shuffles, then the warp
// sums in order by one thread; every thread of the block must call it.
template <int THREADS>
__device__ __forceinline__ float block_inv_rms(float sum_sq, int dim, float eps) {
    __shared__ float warp_sums[THREADS / 32];
    __shared__ float inv_rms;
    const int t = threadIdx.x;
#pragma unroll
    for (int off = 16; off > 0; off /= 2) sum_sq = __fadd_rn(sum_sq, __shfl_xor_sync(0xffffffffu, sum_sq, off));
    if (t % 32 == 0) warp_sums[t / 32] = sum_sq;
    __syncthreads();
    if (t == 0) {
        float s = warp_sums[0];
#pragma unroll
        for (int w = 1; w < THREADS / 32; ++w) s = __fadd_rn(s, warp_sums[w]);
        const float mean = __fdiv_rn(s, static_cast<float>(dim));
        inv_rms = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(mean, eps)));
    }
    __syncthreads();
    return inv_rms;
}

template <int THREADS, int ITEMS>
__global__ void __launch_bounds__(THREADS) rms_norm_quantize_kernel(RmsNormQuantizeParams p) {
    wait_for_producer();  // PDL (common.h): nothing read or written before the previous kernel is done
    constexpr int kThreads = THREADS;
    const int t = threadIdx.x;
    const float* x = p.x + int64_t(blockIdx.x) * p.x_row_stride;
    float v[ITEMS], w[ITEMS];
    float sum_sq = 0.0f;
#pragma unroll
    for (int i = 0; i < ITEMS; ++i) {
        const int e = t + i * kThreads;
        v[i] = e < p.dim ? __ldcs(x + e) : 0.0f;
        w[i] = e < p.dim ? __ldg(p.weight + e) : 0.0f;
    }
#pragma unroll
    for (int i = 0; i < ITEMS; ++i) sum_sq = __fadd_rn(sum_sq, __fmul_rn(v[i], v[i]));
    const float r = block_inv_rms<THREADS>(sum_sq, p.dim, p.eps);
    int8_t* q = p.q + int64_t(blockIdx.x) * p.dim;
#pragma unroll
    for (int i = 0; i < ITEMS; ++i) {
        const int e = t + i * kThreads;
        if (e < p.dim) q[e] = quantize_rn(__fmul_rn(w[i], __fmul_rn(v[i], r)), p.scale);
    }
}

// Gated: block (row blockIdx.x, group blockIdx.y) normalizes the group's group_size channels.
template <int THREADS, int ITEMS>
__global__ void __launch_bounds__(THREADS) gated_rms_norm_quantize_kernel(GatedRmsNormQuantizeParams p) {
    wait_for_producer();  // PDL (common.h): nothing read or written before the previous kernel is done
    const int t = threadIdx.x, offset = blockIdx.y * p.group_size;
    const float* y = p.y + int64_t(blockIdx.x) * p.y_row_stride + offset;
    const int8_t* z = p.z + int64_t(blockIdx.x) * p.z_row_stride + offset;
    float v[ITEMS], w[ITEMS];
    float sum_sq = 0.0f;
#pragma unroll
    for (int i = 0; i < ITEMS; ++i) {
        const int e = t + i * THREADS;
        v[i] = 0.0f;
        w[i] = 0.0f;
        if (e < p.group_size) {
            const float gate = silu_rn(__fmul_rn(static_cast<float>(read_code(z[e])), p.z_scale));
            v[i] = __fmul_rn(__ldcs(y + e), gate);
            w[i] = __ldg(p.weight + offset + e);
        }
    }
#pragma unroll
    for (int i = 0; i < ITEMS; ++i) sum_sq = __fadd_rn(sum_sq, __fmul_rn(v[i], v[i]));
    const float r = block_inv_rms<THREADS>(sum_sq, p.group_size, p.eps);
    int8_t* q = p.y_q + int64_t(blockIdx.x) * p.dim + offset;
#pragma unroll
    for (int i = 0; i < ITEMS; ++i) {
        const int e = t + i * THREADS;
        if (e < p.group_size) q[e] = quantize_rn(__fmul_rn(w[i], __fmul_rn(v[i], r)), p.out_scale);
    }
}

template <int THREADS, int ITEMS>
cudaError_t launch_items(const RmsNormQuantizeParams& p, cudaStream_t stream) {
    return launch_kernel(rms_norm_quantize_kernel<THREADS, ITEMS>, static_cast<unsigned>(p.rows), THREADS, 0, stream,
                         p);
}

template <int THREADS, int ITEMS>
cudaError_t launch_gated_items(const GatedRmsNormQuantizeParams& p, cudaStream_t stream) {
    const dim3 grid(static_cast<unsigned>(p.rows), static_cast<unsigned>(p.dim / p.group_size));
    return launch_kernel(gated_rms_norm_quantize_kernel<THREADS, ITEMS>, grid, THREADS, 0, stream, p);
}

}  // namespace

cudaError_t launch_rms_norm_quantize(const RmsNormQuantizeParams& p, cudaStream_t stream) {
    if (p.rows < 0 || p.dim < 1 || p.dim > kRmsNormMaxDim || p.x_row_stride < p.dim || p.rows > 2147483647 ||
        !(p.eps >= 0.0f) || !std::isfinite(p.eps) || !(p.scale > 0.0f) || !std::isfinite(p.scale)) {
        return cudaErrorInvalidValue;
    }
    if (p.rows == 0) return cudaSuccess;
    if (p.x == nullptr || p.weight == nullptr || p.q == nullptr) return cudaErrorInvalidValue;
    if (p.dim <= 1024) return launch_items<256, 4>(p, stream);
    if (p.dim <= 2048) return launch_items<512, 4>(p, stream);
    if (p.dim <= 4096) return launch_items<1024, 4>(p, stream);
    return launch_items<1024, 8>(p, stream);
}

cudaError_t launch_gated_rms_norm_quantize(const GatedRmsNormQuantizeParams& p, cudaStream_t stream) {
    if (p.rows < 0 || p.dim < 1 || p.group_size < 1 || p.group_size > kRmsNormMaxDim || p.dim % p.group_size != 0 ||
        p.dim / p.group_size > 65535 || p.y_row_stride < p.dim || p.z_row_stride < p.dim || p.rows > 2147483647 ||
        !(p.eps >= 0.0f) || !std::isfinite(p.eps) || !(p.z_scale > 0.0f) || !std::isfinite(p.z_scale) ||
        !(p.out_scale > 0.0f) || !std::isfinite(p.out_scale)) {
        return cudaErrorInvalidValue;
    }
    if (p.rows == 0) return cudaSuccess;
    if (p.y == nullptr || p.z == nullptr || p.weight == nullptr || p.y_q == nullptr) return cudaErrorInvalidValue;
    if (p.group_size <= 1024) return launch_gated_items<256, 4>(p, stream);
    if (p.group_size <= 2048) return launch_gated_items<512, 4>(p, stream);
    if (p.group_size <= 4096) return launch_gated_items<1024, 4>(p, stream);
    return launch_gated_items<1024, 8>(p, stream);
}

}  // namespace kernels
}  // namespace edge_quamba
