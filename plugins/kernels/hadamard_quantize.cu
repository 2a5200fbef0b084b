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

constexpr int kThreads = 512;
constexpr int kMaxDim = 16384;  // 64 KB of shared memory per block

__device__ __forceinline__ const int8_t* small_table(int m) {
    return m == 12 ? kHadamard12 : m == 20 ? kHadamard20 : kHadamard28;
}

__global__ void __launch_bounds__(kThreads) hadamard_quantize_kernel(HadamardQuantizeParams prm, int m, int p,
                                                                       float c) {
    extern __shared__ float X[];  // (m, p) row-major
    const int n = prm.dim;
    const float* y = prm.y + int64_t(blockIdx.x) * prm.y_row_stride;
    for (int e = threadIdx.x; e < n; e += kThreads) X[e] = y[e];

    for (int h = 1; h < p; h *= 2) {  // Sylvester butterflies, stages in the reference's order
        __syncthreads();
        for (int q = threadIdx.x; q < n / 2; q += kThreads) {
            const int i = q / (p / 2), k = q % (p / 2);
            const int j = i * p + (k / h) * 2 * h + (k % h);
            const float a = X[j], b = X[j + h];
            X[j] = __fadd_rn(a, b);
            X[j + h] = __fsub_rn(a, b);
        }
    }
    __syncthreads();

    int8_t* out = prm.y_q + int64_t(blockIdx.x) * n;
    const int8_t* H = m > 1 ? small_table(m) : nullptr;
    for (int e = threadIdx.x; e < n; e += kThreads) {
        float z = X[e];
        if (m > 1) {  // Z[i, j] = sum_r H[i, r] X[r, j], r in order, starting from H[i, 0] X[0, j]
            const int i = e / p, j = e % p;
            z = H[i * m] > 0 ? X[j] : -X[j];
            for (int r = 1; r < m; ++r) {
                const float xr = X[r * p + j];
                z = H[i * m + r] > 0 ? __fadd_rn(z, xr) : __fsub_rn(z, xr);
            }
        }
        out[e] = quantize_rn(__fmul_rn(z, c), prm.out_scale);
    }
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
    const float c = static_cast<float>(1.0 / std::sqrt(static_cast<double>(prm.dim)));  // rounded once
    const size_t smem = sizeof(float) * prm.dim;
    if (smem > 48 * 1024) {
        const cudaError_t err = cudaFuncSetAttribute(hadamard_quantize_kernel,
                                                     cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
        if (err != cudaSuccess) return err;
    }
    hadamard_quantize_kernel<<<static_cast<unsigned>(prm.rows), kThreads, smem, stream>>>(prm, m, p, c);
    return cudaGetLastError();
}

}  // namespace kernels
}  // namespace edge_quamba
