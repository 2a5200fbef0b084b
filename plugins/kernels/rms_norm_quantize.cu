// rms_norm_quantize; see rms_norm_quantize.h for the contract.
//
// Work split: one block of THREADS (256 .. 1024) threads per row, a single pass over x: thread t holds the elements
// t, t + THREADS, ... (coalesced loads, ITEMS <= 8 registers; few per thread, since at decode the one row's latency
// is the cost) and their weights, both loaded before the reduction; the block reduces the sums of squares (warp
// shuffles, then the warp sums in order by one thread), which computes mean and 1 / sqrt(mean + eps) once; every
// thread then normalizes, scales by weight and quantizes its registers, writing int8.
#include <cmath>

#include "numerics.cuh"
#include "rms_norm_quantize.h"

namespace edge_quamba {
namespace kernels {
namespace {

template <int THREADS, int ITEMS>
__global__ void __launch_bounds__(THREADS) rms_norm_quantize_kernel(RmsNormQuantizeParams p) {
    constexpr int kThreads = THREADS;
    __shared__ float warp_sums[kThreads / 32];
    __shared__ float inv_rms;
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
#pragma unroll
    for (int off = 16; off > 0; off /= 2) sum_sq = __fadd_rn(sum_sq, __shfl_xor_sync(0xffffffffu, sum_sq, off));
    if (t % 32 == 0) warp_sums[t / 32] = sum_sq;
    __syncthreads();
    if (t == 0) {
        float s = warp_sums[0];
#pragma unroll
        for (int w = 1; w < kThreads / 32; ++w) s = __fadd_rn(s, warp_sums[w]);
        const float mean = __fdiv_rn(s, static_cast<float>(p.dim));
        inv_rms = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(mean, p.eps)));
    }
    __syncthreads();
    const float r = inv_rms;
    int8_t* q = p.q + int64_t(blockIdx.x) * p.dim;
#pragma unroll
    for (int i = 0; i < ITEMS; ++i) {
        const int e = t + i * kThreads;
        if (e < p.dim) q[e] = quantize_rn(__fmul_rn(w[i], __fmul_rn(v[i], r)), p.scale);
    }
}

template <int THREADS, int ITEMS>
cudaError_t launch_items(const RmsNormQuantizeParams& p, cudaStream_t stream) {
    rms_norm_quantize_kernel<THREADS, ITEMS><<<static_cast<unsigned>(p.rows), THREADS, 0, stream>>>(p);
    return cudaGetLastError();
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

}  // namespace kernels
}  // namespace edge_quamba
