// quantize: float32/float16/bfloat16 (rows, cols) -> int8 (rows, cols); see quantize.h.
//
// Layout: x rows may be strided (x_row_stride), the output is contiguous. One thread converts 4 consecutive
// elements of a row (a 4-byte int8 store); the grid walks (rows * ceil(cols / 4)) such groups. Conversion of
// half/bfloat16 to float32 is exact, so the numerics are those of primitives.quantize on float32(x).
#include <algorithm>
#include <cmath>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "numerics.cuh"
#include "quantize.h"

namespace edge_quamba {
namespace kernels {
namespace {

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__global__ void quantize_kernel(QuantizeParams p) {
    wait_for_producer();  // PDL (common.h): nothing read or written before the previous kernel is done
    const int64_t groups_per_row = (p.cols + 3) / 4;
    const int64_t total = p.rows * groups_per_row;
    const T* x = static_cast<const T*>(p.x);
    for (int64_t g = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; g < total;
         g += int64_t(gridDim.x) * blockDim.x) {
        const int64_t row = g / groups_per_row;
        const int64_t col = (g - row * groups_per_row) * 4;
        const T* xr = x + row * p.x_row_stride;
        int8_t* qr = p.q + row * p.cols;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            if (col + i < p.cols) qr[col + i] = quantize_rn(to_float(xr[col + i]), p.scale);
        }
    }
}

}  // namespace

cudaError_t launch_quantize(const QuantizeParams& p, cudaStream_t stream) {
    if (p.rows < 0 || p.cols < 0 || p.x_row_stride < p.cols || !(p.scale > 0.0f) || !std::isfinite(p.scale)) {
        return cudaErrorInvalidValue;
    }
    if (p.rows == 0 || p.cols == 0) return cudaSuccess;
    if (p.x == nullptr || p.q == nullptr) return cudaErrorInvalidValue;
    const int threads = 256;
    const int64_t groups = p.rows * ((p.cols + 3) / 4);
    const int blocks = static_cast<int>(std::min<int64_t>((groups + threads - 1) / threads, 65536));
    switch (p.x_type) {
        case FloatType::kFloat32: return launch_kernel(quantize_kernel<float>, blocks, threads, 0, stream, p);
        case FloatType::kFloat16: return launch_kernel(quantize_kernel<__half>, blocks, threads, 0, stream, p);
        case FloatType::kBFloat16: return launch_kernel(quantize_kernel<__nv_bfloat16>, blocks, threads, 0, stream, p);
        default: return cudaErrorInvalidValue;
    }
}

}  // namespace kernels
}  // namespace edge_quamba
