// hadamard_quantize; see hadamard_quantize.h for the contract and the fixed float order.
//
// Memory layout and work split: one block per row of y; the row (n float32) is copied into shared memory as the
// (m, p) row-major matrix X (element i * p + j). Stage h of the Sylvester transform updates the n / 2 pairs
// (i * p + j, i * p + j + h), j in blocks of 2h, one pair per thread, with a barrier between stages, so the stages
// run in the order h = 1, 2, ..., p / 2 of the reference. Then thread e (element (i, j)) sums H_m[i, r] * X[r, j]
// for r = 0, 1, ..., m - 1 in that order (each term a sign flip, added with __fadd_rn / __fsub_rn), multiplies by
// c = float32(1 / sqrt(n)) and quantizes; the int8 row is written contiguously.
#include <cmath>

#include "hadamard_quantize.h"
#include "hadamard_tables.h"
#include "numerics.cuh"

namespace edge_quamba {
namespace kernels {
namespace {

constexpr int kThreads = 1024;  // one row per block: at decode (one row) the whole row's work is in this block
constexpr int kMaxDim = 16384;  // 64 KB of shared memory per block

template <int M> __device__ __forceinline__ int8_t h_entry(int i, int r);
template <> __device__ __forceinline__ int8_t h_entry<12>(int i, int r) { return kHadamard12[i * 12 + r]; }
template <> __device__ __forceinline__ int8_t h_entry<20>(int i, int r) { return kHadamard20[i * 20 + r]; }
template <> __device__ __forceinline__ int8_t h_entry<28>(int i, int r) { return kHadamard28[i * 28 + r]; }

// M: the H_m factor (1, 12, 20, 28); log_p = log2(p), p = n / M.
template <int M>
__global__ void __launch_bounds__(kThreads) hadamard_quantize_kernel(HadamardQuantizeParams prm, int log_p,
                                                                       float c) {
    extern __shared__ float X[];  // (M, p) row-major
    const int n = prm.dim, p = 1 << log_p;
    const float* y = prm.y + int64_t(blockIdx.x) * prm.y_row_stride;
    for (int e = threadIdx.x; e < n; e += kThreads) X[e] = y[e];

    for (int log_h = 0; log_h < log_p; ++log_h) {  // Sylvester butterflies, stages h = 1, 2, ..., p/2 in order
        __syncthreads();
        const int h = 1 << log_h;
        for (int q = threadIdx.x; q < n / 2; q += kThreads) {
            const int i = q >> (log_p - 1), k = q & (p / 2 - 1);  // X row i, pair k of that row
            const int j = (i << log_p) + ((k >> log_h) << (log_h + 1)) + (k & (h - 1));
            const float a = X[j], b = X[j + h];
            X[j] = __fadd_rn(a, b);
            X[j + h] = __fsub_rn(a, b);
        }
    }
    __syncthreads();

    int8_t* out = prm.y_q + int64_t(blockIdx.x) * n;
#pragma unroll 4
    for (int e = threadIdx.x; e < n; e += kThreads) {
        float z = X[e];
        if constexpr (M > 1) {  // Z[i, j] = sum_r H[i, r] X[r, j], r in order, starting from H[i, 0] X[0, j]
            const int i = e >> log_p, j = e & (p - 1);
            z = h_entry<M>(i, 0) > 0 ? X[j] : -X[j];
#pragma unroll
            for (int r = 1; r < M; ++r) {
                const float xr = X[(r << log_p) + j];
                z = h_entry<M>(i, r) > 0 ? __fadd_rn(z, xr) : __fsub_rn(z, xr);
            }
        }
        out[e] = quantize_rn(__fmul_rn(z, c), prm.out_scale);
    }
}

template <int M>
cudaError_t launch_m(const HadamardQuantizeParams& prm, int p, cudaStream_t stream) {
    int log_p = 0;
    while ((1 << log_p) < p) ++log_p;
    const float c = static_cast<float>(1.0 / std::sqrt(static_cast<double>(prm.dim)));  // rounded once
    const size_t smem = sizeof(float) * prm.dim;
    if (smem > 48 * 1024) {
        const cudaError_t err = cudaFuncSetAttribute(hadamard_quantize_kernel<M>,
                                                     cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
        if (err != cudaSuccess) return err;
    }
    hadamard_quantize_kernel<M><<<static_cast<unsigned>(prm.rows), kThreads, smem, stream>>>(prm, log_p, c);
    return cudaGetLastError();
}

// (m, p) with n = m * p, m in {1, 12, 20, 28}, p a power of two; m = 0 when unsupported.
void factor(int n, int* m, int* p) {
    int odd = n, pow2 = 1;
    while (odd > 0 && odd % 2 == 0) { odd /= 2; pow2 *= 2; }
    *m = 0; *p = 0;
    if (n < 1) return;
    if (odd == 1) { *m = 1; *p = n; return; }
    const int mm = 4 * odd;
    if ((mm == 12 || mm == 20 || mm == 28) && pow2 % 4 == 0) { *m = mm; *p = n / mm; }
}

}  // namespace

bool hadamard_dim_supported(int n) {
    int m, p;
    factor(n, &m, &p);
    return m > 0 && n <= kMaxDim;
}

cudaError_t launch_hadamard_quantize(const HadamardQuantizeParams& prm, cudaStream_t stream) {
    if (prm.rows < 0 || !hadamard_dim_supported(prm.dim) || prm.y_row_stride < prm.dim || prm.rows > 2147483647 ||
        !(prm.out_scale > 0.0f) || !std::isfinite(prm.out_scale)) {
        return cudaErrorInvalidValue;
    }
    if (prm.rows == 0) return cudaSuccess;
    if (prm.y == nullptr || prm.y_q == nullptr) return cudaErrorInvalidValue;
    int m, p;
    factor(prm.dim, &m, &p);
    switch (m) {
        case 1: return launch_m<1>(prm, p, stream);
        case 12: return launch_m<12>(prm, p, stream);
        case 20: return launch_m<20>(prm, p, stream);
        default: return launch_m<28>(prm, p, stream);
    }
}

}  // namespace kernels
}  // namespace edge_quamba
