// The three public launchers of the 4-bit-weight linears (int4_linear.h): their checks, then the dispatch between
// the W4A8 GEMV (int4_gemv.cu), the W4A16 GEMVs (int4_gemv_f16.cu) and the tensor-core GEMM (int4_gemm.cu).
#include <cstdint>

#include "conv_step.cuh"
#include "int4_common.cuh"

namespace edge_quamba {
namespace kernels {
namespace w4 {
namespace {

// The checks every launcher shares (int4_linear.h, "Requirements"); returns cudaSuccess when p is usable.
cudaError_t validate(const Problem& p, bool x_scaled, bool quantize) {
    if (p.M < 0 || p.N < 0 || p.K < 1 || p.K > 131071 || p.group_size < 1 || p.groups > kInt4MaxGroups ||
        p.x_row_stride < p.K || p.y_row_stride < p.N) {
        return cudaErrorInvalidValue;
    }
    if ((x_scaled && !usable_scale(p.x_scale)) ||
        (quantize && !valid_out_scales(p.out_segments, p.out_scale, p.N))) {
        return cudaErrorInvalidValue;
    }
    if (p.M > 0 && p.N > 0 && (p.x == nullptr || p.w == nullptr || p.scale == nullptr || p.y == nullptr)) {
        return cudaErrorInvalidValue;
    }
    return cudaSuccess;
}

Problem problem(int64_t M, int N, int K, int group_size, const void* x, int64_t x_row_stride, const uint8_t* w,
                const float* scale, const float* bias, void* y, int64_t y_row_stride, float x_scale,
                float out_scale, const OutScaleSegments& out_segments = {}) {
    const int groups = group_size >= 1 ? (K + group_size - 1) / group_size : 0;
    return Problem{M, N, K, group_size, groups, x, x_row_stride, w, scale, bias, y, y_row_stride, x_scale,
                   out_scale, out_segments};
}

cudaError_t run_w4a8(const Problem& p, bool quantize, cudaStream_t stream) {
    const cudaError_t err = validate(p, true, quantize);
    if (err != cudaSuccess || p.M == 0 || p.N == 0) return err;
    const bool fused = p.residual != nullptr || p.conv.dim != 0;  // the decode fusions: the GEMV's epilogue only
    if ((p.residual != nullptr && (quantize || p.residual_row_stride < p.N)) ||
        (p.conv.dim != 0 && (!quantize || !valid_conv_step(p.conv, p.conv_begin, p.out_segments, p.out_scale, p.N)))) {
        return cudaErrorInvalidValue;
    }
    if (p.M > 16 && tensor_core_shape(p, 1)) {
        if (fused) return cudaErrorInvalidValue;
        return launch_gemm(p, quantize ? Mode::kW4A8Quantize : Mode::kW4A8, stream);
    }
    return launch_w4a8_gemv(p, quantize, stream);
}

}  // namespace
}  // namespace w4

cudaError_t launch_w4a8_linear(const W4A8LinearParams& p, cudaStream_t stream) {
    w4::Problem q = w4::problem(p.M, p.N, p.K, p.group_size, p.x, p.x_row_stride, p.w_packed, p.w_scale, p.bias, p.y,
                                p.y_row_stride, p.x_scale, 1.0f);
    q.residual = p.residual;
    q.residual_row_stride = p.residual_row_stride;
    return w4::run_w4a8(q, false, stream);
}

cudaError_t launch_w4a8_linear_quantize(const W4A8LinearQuantizeParams& p, cudaStream_t stream) {
    w4::Problem q = w4::problem(p.M, p.N, p.K, p.group_size, p.x, p.x_row_stride, p.w_packed, p.w_scale, p.bias,
                                p.y_q, p.y_row_stride, p.x_scale, p.out_scale, p.out_segments);
    q.conv_begin = p.conv_begin;
    q.conv = p.conv;
    return w4::run_w4a8(q, true, stream);
}

cudaError_t launch_w4a16_linear(const W4A16LinearParams& p, cudaStream_t stream) {
    const w4::Problem q = w4::problem(p.M, p.N, p.K, p.group_size, p.x, p.x_row_stride, p.w_packed, p.w_scale,
                                          p.bias, p.y, p.y_row_stride, 1.0f, 1.0f);
    const cudaError_t err = w4::validate(q, false, false);
    if (err != cudaSuccess || q.M == 0 || q.N == 0) return err;
    if (!w4::tensor_core_shape(q, 2)) return w4::launch_w4a16_generic(q, stream);
    return q.M > 16 ? w4::launch_gemm(q, w4::Mode::kW4A16, stream) : w4::launch_w4a16_gemv(q, stream);
}

}  // namespace kernels
}  // namespace edge_quamba
