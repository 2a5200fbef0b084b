// PyTorch binding of the edge-quamba int8 and 4-bit-weight kernels: the only C++ file that touches at::Tensor.
//
// Each function checks devices, dtypes and shapes (EQ_CHECK; the Python wrappers check first), describes its
// tensors to the kernel by pointer + element strides (views such as the x / z halves of in_proj's output or the
// dt / B / C slices of x_proj's output are passed as they are, with no copy), allocates the outputs and launches on
// the current stream. Semantics: OPS_CONTRACT.md; edge_quamba/ops/cuda_ops.py registers these as the CUDA kernels
// of torch.ops.edge_quamba.*.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include <functional>
#include <optional>
#include <stdexcept>
#include <tuple>

#include "../kernels/kernels.h"

namespace ek = edge_quamba::kernels;

namespace {

// Bad arguments throw std::invalid_argument. On the H200 image (torch 2.11+cu130) ANY exception thrown from this JIT
// extension crashed the interpreter (segmentation fault): TORCH_CHECK's c10::Error in one run, std::invalid_argument
// in the next; the cause was not diagnosed. So edge_quamba/ops/cuda_ops.py checks every argument in Python first
// and these checks are only a last line of defence.
#define EQ_CHECK(cond, ...) \
    do { \
        if (!(cond)) throw std::invalid_argument(c10::str(__VA_ARGS__)); \
    } while (0)

void check_launch(cudaError_t err, const char* op) {
    if (err != cudaSuccess) throw std::runtime_error(c10::str(op, ": kernel launch failed: ", cudaGetErrorString(err)));
}

void check_cuda(const at::Tensor& t, const char* name, at::ScalarType dtype) {
    EQ_CHECK(t.is_cuda(), name, " must be a CUDA tensor");
    EQ_CHECK(t.scalar_type() == dtype, name, " must be ", dtype, ", got ", t.scalar_type());
}

// (t, row_stride) when t's leading dims collapse into one uniformly strided dim of rows (size-1 dims ignored) and
// the last dim has stride 1, so the kernel reads t in place (e.g. a (b, l, K) slice of a wider (b, l, K') output);
// otherwise (contiguous copy, cols): never the case for the views the model passes.
std::pair<at::Tensor, int64_t> as_rows(const at::Tensor& t) {
    const int64_t D = t.dim(), cols = t.size(D - 1);
    bool ok = t.stride(D - 1) == 1 || cols <= 1;
    int64_t row_stride = -1, expected = -1;
    for (int64_t i = D - 2; ok && i >= 0; --i) {
        if (t.size(i) == 1) continue;
        if (row_stride < 0) {
            row_stride = t.stride(i);
            expected = row_stride * t.size(i);
            ok = row_stride >= cols;
        } else {
            ok = t.stride(i) == expected;
            expected *= t.size(i);
        }
    }
    if (!ok) return {t.contiguous(), cols};
    return {t, row_stride < 0 ? cols : row_stride};
}

// Batch and sequence strides of a (b, l, c) view whose channel stride is 1 (copied otherwise).
at::Tensor channel_contiguous(const at::Tensor& t) {
    return t.stride(2) == 1 || t.size(2) <= 1 ? t : t.contiguous();
}

at::Tensor quantize(const at::Tensor& x, double scale) {
    EQ_CHECK(x.is_cuda(), "quantize: x must be a CUDA tensor");
    const auto st = x.scalar_type();
    EQ_CHECK(st == at::kFloat || st == at::kHalf || st == at::kBFloat16,
                "quantize: x must be float32, float16 or bfloat16, got ", st);
    const c10::cuda::CUDAGuard guard(x.device());
    at::Tensor xv = x.dim() == 0 ? x.reshape({1}) : x;
    auto [xr, row_stride] = as_rows(xv);
    at::Tensor q = at::empty(x.sizes(), x.options().dtype(at::kChar));
    ek::QuantizeParams p{};
    p.cols = xr.size(-1);
    p.rows = p.cols == 0 ? 0 : xr.numel() / p.cols;
    p.x_row_stride = row_stride;
    p.x = xr.data_ptr();
    p.x_type = st == at::kFloat ? ek::FloatType::kFloat32
             : st == at::kHalf ? ek::FloatType::kFloat16 : ek::FloatType::kBFloat16;
    p.q = q.data_ptr<int8_t>();
    p.scale = static_cast<float>(scale);
    check_launch(ek::launch_quantize(p, c10::cuda::getCurrentCUDAStream()), "quantize");
    return q;
}

void check_linear(const at::Tensor& x_q, const at::Tensor& weight_q, const std::optional<at::Tensor>& bias) {
    check_cuda(x_q, "int8_linear: x_q", at::kChar);
    check_cuda(weight_q, "int8_linear: weight_q", at::kChar);
    EQ_CHECK(x_q.dim() >= 1 && weight_q.dim() == 2 && x_q.size(-1) == weight_q.size(1),
                "int8_linear: x_q (..., K) and weight_q (N, K) do not match: ", x_q.sizes(), " vs ", weight_q.sizes());
    EQ_CHECK(weight_q.is_contiguous(), "int8_linear: weight_q must be contiguous (N, K)");
    if (bias.has_value()) {
        check_cuda(*bias, "int8_linear: bias", at::kFloat);
        EQ_CHECK(bias->dim() == 1 && bias->size(0) == weight_q.size(0) && bias->is_contiguous(),
                    "int8_linear: bias must be a contiguous (N,) float32 tensor");
    }
}

// int8_linear, or with residual (the same shape as the output, float32) residual + int8_linear(...).
at::Tensor int8_linear_any(const char* op, const at::Tensor& x_q, const at::Tensor& weight_q,
                           const std::optional<at::Tensor>& bias, double x_scale, double weight_scale,
                           const std::optional<at::Tensor>& residual) {
    check_linear(x_q, weight_q, bias);
    const c10::cuda::CUDAGuard guard(x_q.device());
    const int64_t N = weight_q.size(0), K = weight_q.size(1);
    auto out_sizes = x_q.sizes().vec();
    out_sizes.back() = N;
    auto [xr, row_stride] = as_rows(x_q);
    const int64_t M = K == 0 ? 0 : xr.numel() / K;
    // alpha = float32(x_scale) * float32(weight_scale): one float32 product, as in the reference.
    const float alpha = static_cast<float>(x_scale) * static_cast<float>(weight_scale);
    if (M > 16 && K % 8 == 0 && N % 8 == 0) {
        // Prefill: cuBLASLt IMMA through torch._int_mm (exact int32), then the float32 epilogue as separate ops.
        at::Tensor acc = at::_int_mm(xr.reshape({M, K}).contiguous(), weight_q.t());
        at::Tensor y = acc.to(at::kFloat).mul_(alpha);
        if (bias.has_value()) y.add_(*bias);
        if (residual.has_value()) y.add_(residual->reshape({M, N}));  // y + residual == residual + y in IEEE
        return y.view(out_sizes);
    }
    at::Tensor y = at::empty(out_sizes, x_q.options().dtype(at::kFloat));
    const at::Tensor res = residual.has_value() ? residual->reshape({M, N}).contiguous() : at::Tensor();
    ek::Int8LinearParams p{};
    p.M = M;
    p.N = static_cast<int>(N);
    p.K = static_cast<int>(K);
    p.x = xr.data_ptr<int8_t>();
    p.x_row_stride = row_stride;
    p.w = weight_q.data_ptr<int8_t>();
    p.bias = bias.has_value() ? bias->data_ptr<float>() : nullptr;
    p.y = y.data_ptr<float>();
    p.y_row_stride = N;
    p.x_scale = static_cast<float>(x_scale);
    p.weight_scale = static_cast<float>(weight_scale);
    if (residual.has_value()) {
        p.residual = res.data_ptr<float>();
        p.residual_row_stride = N;
    }
    check_launch(ek::launch_int8_linear(p, c10::cuda::getCurrentCUDAStream()), op);
    return y;
}

at::Tensor int8_linear(const at::Tensor& x_q, const at::Tensor& weight_q, const std::optional<at::Tensor>& bias,
                       double x_scale, double weight_scale) {
    return int8_linear_any("int8_linear", x_q, weight_q, bias, x_scale, weight_scale, std::nullopt);
}

// residual + int8_linear(...) (the block's residual add in out_proj's epilogue): residual (..., N) float32.
at::Tensor int8_linear_residual(const at::Tensor& x_q, const at::Tensor& weight_q,
                                const std::optional<at::Tensor>& bias, double x_scale, double weight_scale,
                                const at::Tensor& residual) {
    check_cuda(residual, "int8_linear_residual: residual", at::kFloat);
    auto out_sizes = x_q.sizes().vec();
    out_sizes.back() = weight_q.size(0);
    EQ_CHECK(residual.sizes().vec() == out_sizes, "int8_linear_residual: residual ", residual.sizes(),
             " is not the output's shape");
    return int8_linear_any("int8_linear_residual", x_q, weight_q, bias, x_scale, weight_scale, residual);
}

// int8_linear with a per-token input scale x_scale (...) float32 (the leading shape of x_q): row m's epilogue
// multiplies by float32(x_scale[m] * weight_scale). GEMV (the kernel reads the per-row scale) for M <= 16; above,
// torch._int_mm (exact int32) and the same epilogue as aten ops: acc * (x_scale[:, None] * weight_scale) (+ bias).
at::Tensor int8_linear_per_token(const at::Tensor& x_q, const at::Tensor& weight_q,
                                 const std::optional<at::Tensor>& bias, const at::Tensor& x_scale,
                                 double weight_scale) {
    check_linear(x_q, weight_q, bias);
    check_cuda(x_scale, "int8_linear_per_token: x_scale", at::kFloat);
    EQ_CHECK(x_scale.sizes() == x_q.sizes().slice(0, x_q.dim() - 1), "int8_linear_per_token: x_scale ",
             x_scale.sizes(), " is not x_q's leading shape ", x_q.sizes());
    const c10::cuda::CUDAGuard guard(x_q.device());
    const int64_t N = weight_q.size(0), K = weight_q.size(1);
    auto out_sizes = x_q.sizes().vec();
    out_sizes.back() = N;
    auto [xr, row_stride] = as_rows(x_q);
    const int64_t M = K == 0 ? 0 : xr.numel() / K;
    const at::Tensor scale_rows = x_scale.contiguous().reshape({M});
    const float w_scale = static_cast<float>(weight_scale);
    if (M > 16 && K % 8 == 0 && N % 8 == 0) {
        at::Tensor acc = at::_int_mm(xr.reshape({M, K}).contiguous(), weight_q.t());
        at::Tensor y = acc.to(at::kFloat).mul_(scale_rows.reshape({M, 1}).mul(w_scale));  // float32 products
        if (bias.has_value()) y.add_(*bias);
        return y.view(out_sizes);
    }
    at::Tensor y = at::empty(out_sizes, x_q.options().dtype(at::kFloat));
    ek::Int8LinearParams p{};
    p.M = M;
    p.N = static_cast<int>(N);
    p.K = static_cast<int>(K);
    p.x = xr.data_ptr<int8_t>();
    p.x_row_stride = row_stride;
    p.w = weight_q.data_ptr<int8_t>();
    p.bias = bias.has_value() ? bias->data_ptr<float>() : nullptr;
    p.y = y.data_ptr<float>();
    p.y_row_stride = N;
    p.x_scale = 1.0f;  // unused: every row reads its own scale
    p.weight_scale = w_scale;
    p.x_scale_rows = scale_rows.data_ptr<float>();
    check_launch(ek::launch_int8_linear(p, c10::cuda::getCurrentCUDAStream()), "int8_linear_per_token");
    return y;
}

// The column segments of a *_quantize_segments op: consecutive sizes (> 0, summing to N), one scale each.
ek::OutScaleSegments out_segments(const char* op, const std::vector<double>& scales,
                                  const std::vector<int64_t>& sizes, int64_t N) {
    EQ_CHECK(!sizes.empty() && sizes.size() == scales.size() &&
             sizes.size() <= static_cast<size_t>(ek::kMaxOutSegments), op, ": expected 1 to ",
             ek::kMaxOutSegments, " segments with one scale each, got ", sizes.size(), " sizes and ",
             scales.size(), " scales");
    ek::OutScaleSegments s{};
    s.count = static_cast<int>(sizes.size());
    int64_t end = 0;
    for (int i = 0; i < s.count; ++i) {
        EQ_CHECK(sizes[i] > 0, op, ": segment sizes must be > 0");
        end += sizes[i];
        s.end[i] = static_cast<int>(std::min<int64_t>(end, INT32_MAX));
        s.scale[i] = static_cast<float>(scales[i]);
    }
    EQ_CHECK(end == N, op, ": segment sizes sum to ", end, ", the output has ", N, " columns");
    return s;
}

// quantize(int8_linear(...), out_scale) in one kernel: the GEMV with the int8 epilogue for M <= 16, otherwise
// torch._int_mm (exact int32) followed by one fused epilogue kernel (float32 epilogue + quantize in one pass).
// With segments (count > 0), each column segment at its own scale.
// With conv (M <= 16 only, the caller's check): the GEMV's epilogue also runs that conv step (int8_linear.h).
at::Tensor int8_linear_quantize_any(const char* op, const at::Tensor& x_q, const at::Tensor& weight_q,
                                    const std::optional<at::Tensor>& bias, double x_scale, double weight_scale,
                                    double out_scale, const ek::OutScaleSegments& segments,
                                    const ek::CausalConv1dParams* conv = nullptr, int conv_begin = 0) {
    check_linear(x_q, weight_q, bias);
    const c10::cuda::CUDAGuard guard(x_q.device());
    const int64_t N = weight_q.size(0), K = weight_q.size(1);
    auto out_sizes = x_q.sizes().vec();
    out_sizes.back() = N;
    auto [xr, row_stride] = as_rows(x_q);
    const int64_t M = K == 0 ? 0 : xr.numel() / K;
    at::Tensor q = at::empty(out_sizes, x_q.options());
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    if (M > 16 && K % 8 == 0 && N % 8 == 0) {
        EQ_CHECK(conv == nullptr, op, ": the conv step runs in the GEMV only (M <= 16)");
        const at::Tensor acc = at::_int_mm(xr.reshape({M, K}).contiguous(), weight_q.t());
        ek::Int32EpilogueQuantizeParams e{};
        e.M = M;
        e.N = static_cast<int>(N);
        e.acc = acc.data_ptr<int32_t>();
        e.bias = bias.has_value() ? bias->data_ptr<float>() : nullptr;
        e.y_q = q.data_ptr<int8_t>();
        e.x_scale = static_cast<float>(x_scale);
        e.weight_scale = static_cast<float>(weight_scale);
        e.out_scale = static_cast<float>(out_scale);
        e.out_segments = segments;
        check_launch(ek::launch_int32_epilogue_quantize(e, stream), op);
        return q;
    }
    ek::Int8LinearQuantizeParams p{};
    p.M = M;
    p.N = static_cast<int>(N);
    p.K = static_cast<int>(K);
    p.x = xr.data_ptr<int8_t>();
    p.x_row_stride = row_stride;
    p.w = weight_q.data_ptr<int8_t>();
    p.bias = bias.has_value() ? bias->data_ptr<float>() : nullptr;
    p.y_q = q.data_ptr<int8_t>();
    p.y_row_stride = N;
    p.x_scale = static_cast<float>(x_scale);
    p.weight_scale = static_cast<float>(weight_scale);
    p.out_scale = static_cast<float>(out_scale);
    p.out_segments = segments;
    if (conv != nullptr) {
        p.conv = *conv;
        p.conv_begin = conv_begin;
    }
    check_launch(ek::launch_int8_linear_quantize(p, stream), op);
    return q;
}

at::Tensor int8_linear_quantize(const at::Tensor& x_q, const at::Tensor& weight_q,
                                const std::optional<at::Tensor>& bias, double x_scale, double weight_scale,
                                double out_scale) {
    return int8_linear_quantize_any("int8_linear_quantize", x_q, weight_q, bias, x_scale, weight_scale, out_scale,
                                    ek::OutScaleSegments{});
}

// int8_linear_quantize with consecutive column segments of the output at their own scales (Mamba2's in_proj).
at::Tensor int8_linear_quantize_segments(const at::Tensor& x_q, const at::Tensor& weight_q,
                                         const std::optional<at::Tensor>& bias, double x_scale, double weight_scale,
                                         const std::vector<double>& out_scales, const std::vector<int64_t>& sizes) {
    const char* op = "int8_linear_quantize_segments";
    return int8_linear_quantize_any(op, x_q, weight_q, bias, x_scale, weight_scale, 1.0,
                                    out_segments(op, out_scales, sizes, weight_q.size(0)));
}

// quantize(RMSNorm(x) * weight, scale): one block per row, the row kept in registers.
at::Tensor rms_norm_quantize(const at::Tensor& x, const at::Tensor& weight, double eps, double scale) {
    check_cuda(x, "rms_norm_quantize: x", at::kFloat);
    check_cuda(weight, "rms_norm_quantize: weight", at::kFloat);
    EQ_CHECK(x.dim() >= 1 && weight.dim() == 1 && weight.size(0) == x.size(-1) && weight.is_contiguous(),
                "rms_norm_quantize: x (..., d) and weight (d,) do not match: ", x.sizes(), " vs ", weight.sizes());
    const int64_t d = x.size(-1);
    EQ_CHECK(d >= 1 && d <= ek::kRmsNormMaxDim, "rms_norm_quantize: d=", d, " not in [1, ", ek::kRmsNormMaxDim, "]");
    const c10::cuda::CUDAGuard guard(x.device());
    auto [xr, row_stride] = as_rows(x);
    at::Tensor q = at::empty(x.sizes(), x.options().dtype(at::kChar));
    ek::RmsNormQuantizeParams p{};
    p.rows = xr.numel() / d;
    p.dim = static_cast<int>(d);
    p.x_row_stride = row_stride;
    p.x = xr.data_ptr<float>();
    p.weight = weight.data_ptr<float>();
    p.q = q.data_ptr<int8_t>();
    p.eps = static_cast<float>(eps);
    p.scale = static_cast<float>(scale);
    check_launch(ek::launch_rms_norm_quantize(p, c10::cuda::getCurrentCUDAStream()), "rms_norm_quantize");
    return q;
}

// The conv with one output scale (out_scales empty) or one per channel (out_scales (d_in,) float32, Mamba2).
std::tuple<at::Tensor, at::Tensor> causal_conv1d_impl(const at::Tensor& x_q, const at::Tensor& conv_state_q,
                                                      const at::Tensor& weight_q, const std::optional<at::Tensor>& bias,
                                                      double x_scale, double weight_scale, double out_scale,
                                                      const std::optional<at::Tensor>& out_scales) {
    check_cuda(x_q, "int8_causal_conv1d: x_q", at::kChar);
    check_cuda(conv_state_q, "int8_causal_conv1d: conv_state_q", at::kChar);
    check_cuda(weight_q, "int8_causal_conv1d: weight_q", at::kChar);
    EQ_CHECK(x_q.dim() == 3 && conv_state_q.dim() == 3 && weight_q.dim() == 2,
                "int8_causal_conv1d: expected x_q (b, l, d_in), conv_state_q (b, d_in, k), weight_q (d_in, k)");
    const int64_t b = x_q.size(0), l = x_q.size(1), d = x_q.size(2), k = weight_q.size(1);
    EQ_CHECK(conv_state_q.size(0) == b && conv_state_q.size(1) == d && conv_state_q.size(2) == k &&
                weight_q.size(0) == d, "int8_causal_conv1d: shapes do not match: x_q ", x_q.sizes(),
                ", conv_state_q ", conv_state_q.sizes(), ", weight_q ", weight_q.sizes());
    EQ_CHECK(k >= 1 && k <= ek::kConvMaxWidth, "int8_causal_conv1d: width k=", k, " not in [1, ",
                ek::kConvMaxWidth, "]");
    if (bias.has_value()) {
        check_cuda(*bias, "int8_causal_conv1d: bias", at::kFloat);
        EQ_CHECK(bias->dim() == 1 && bias->size(0) == d, "int8_causal_conv1d: bias must be (d_in,)");
    }
    if (out_scales.has_value()) {
        check_cuda(*out_scales, "int8_causal_conv1d: out_scales", at::kFloat);
        EQ_CHECK(out_scales->dim() == 1 && out_scales->size(0) == d, "int8_causal_conv1d: out_scales must be (d_in,)");
    }
    const c10::cuda::CUDAGuard guard(x_q.device());
    const at::Tensor x = channel_contiguous(x_q);
    const at::Tensor state = conv_state_q.contiguous();
    const at::Tensor w = weight_q.contiguous();
    const std::optional<at::Tensor> bc = bias.has_value() ? std::optional<at::Tensor>(bias->contiguous()) : bias;
    const std::optional<at::Tensor> sc =
        out_scales.has_value() ? std::optional<at::Tensor>(out_scales->contiguous()) : out_scales;
    at::Tensor u = at::empty({b, l, d}, x_q.options());
    at::Tensor state_out = at::empty({b, d, k}, x_q.options());
    ek::CausalConv1dParams p{};
    p.batch = static_cast<int>(b); p.seqlen = static_cast<int>(l); p.dim = static_cast<int>(d);
    p.width = static_cast<int>(k);
    p.x_batch_stride = x.stride(0); p.x_seq_stride = x.stride(1);
    p.x = x.data_ptr<int8_t>();
    p.conv_state_in = state.data_ptr<int8_t>();
    p.weight = w.data_ptr<int8_t>();
    p.bias = bc.has_value() ? bc->data_ptr<float>() : nullptr;
    p.u = u.data_ptr<int8_t>();
    p.conv_state_out = state_out.data_ptr<int8_t>();
    p.x_scale = static_cast<float>(x_scale);
    p.weight_scale = static_cast<float>(weight_scale);
    p.out_scale = static_cast<float>(out_scale);
    p.out_scales = sc.has_value() ? sc->data_ptr<float>() : nullptr;
    check_launch(ek::launch_int8_causal_conv1d(p, c10::cuda::getCurrentCUDAStream()), "int8_causal_conv1d");
    return {u, state_out};
}

std::tuple<at::Tensor, at::Tensor> int8_causal_conv1d(const at::Tensor& x_q, const at::Tensor& conv_state_q,
                                                      const at::Tensor& weight_q, const std::optional<at::Tensor>& bias,
                                                      double x_scale, double weight_scale, double out_scale) {
    return causal_conv1d_impl(x_q, conv_state_q, weight_q, bias, x_scale, weight_scale, out_scale, std::nullopt);
}

// The scale a *_quantize_conv_update op's conv reads its input columns [conv_begin, conv_begin + C) at: that of the
// segment that holds them (one segment, checked).
double conv_input_scale(const char* op, const std::vector<double>& out_scales, const std::vector<int64_t>& sizes,
                        int64_t conv_begin, int64_t C) {
    int64_t begin = 0;
    for (size_t i = 0; i < sizes.size(); begin += sizes[i], ++i) {
        if (conv_begin >= begin && conv_begin < begin + sizes[i]) {
            EQ_CHECK(conv_begin + C <= begin + sizes[i], op, ": the conv's columns span two segments");
            return out_scales[i];
        }
    }
    EQ_CHECK(false, op, ": the conv's first column ", conv_begin, " is past the output");
    return 0.0;
}

// The conv step of a *_quantize_conv_update op run in the GEMV's epilogue (Mamba's conv over in_proj's x columns):
// its checks, its outputs u (b, C) and state_out (b, C, k), and its params.
struct ConvUpdate {
    ek::CausalConv1dParams params{};
    at::Tensor state_in, weight, u, state_out;
};

ConvUpdate conv_update(const char* op, const at::Tensor& x_q, int64_t N, const std::vector<double>& out_scales,
                       const std::vector<int64_t>& sizes, int64_t conv_begin, const at::Tensor& conv_state,
                       const at::Tensor& conv_weight, const std::optional<at::Tensor>& conv_bias,
                       double conv_weight_scale, double conv_out_scale,
                       const std::optional<at::Tensor>& conv_out_scales) {
    check_cuda(conv_state, op, at::kChar);
    check_cuda(conv_weight, op, at::kChar);
    EQ_CHECK(x_q.dim() == 2 && conv_state.dim() == 3 && conv_weight.dim() == 2, op,
             ": expected x_q (b, K), conv_state (b, C, k), conv_weight (C, k)");
    const int64_t b = x_q.size(0), C = conv_state.size(1), k = conv_state.size(2);
    EQ_CHECK(conv_state.size(0) == b && conv_weight.size(0) == C && conv_weight.size(1) == k && conv_begin >= 0 &&
             conv_begin + C <= N && C >= 1 && k >= 1 && k <= ek::kConvMaxWidth, op, ": conv_state ",
             conv_state.sizes(), " / conv_weight ", conv_weight.sizes(), " do not fit columns from ", conv_begin,
             " of ", N);
    ConvUpdate c;
    if (conv_bias.has_value()) {
        check_cuda(*conv_bias, op, at::kFloat);
        EQ_CHECK(conv_bias->dim() == 1 && conv_bias->size(0) == C && conv_bias->is_contiguous(), op,
                 ": conv_bias must be a contiguous (C,) float32 tensor");
    }
    if (conv_out_scales.has_value()) {
        check_cuda(*conv_out_scales, op, at::kFloat);
        EQ_CHECK(conv_out_scales->dim() == 1 && conv_out_scales->size(0) == C && conv_out_scales->is_contiguous(), op,
                 ": conv_out_scales must be a contiguous (C,) float32 tensor");
    }
    c.state_in = conv_state.contiguous();
    c.weight = conv_weight.contiguous();
    c.u = at::empty({b, C}, x_q.options());
    c.state_out = at::empty({b, C, k}, x_q.options());
    ek::CausalConv1dParams& p = c.params;
    p.batch = static_cast<int>(b); p.seqlen = 1; p.dim = static_cast<int>(C); p.width = static_cast<int>(k);
    p.conv_state_in = c.state_in.data_ptr<int8_t>();
    p.conv_state_out = c.state_out.data_ptr<int8_t>();
    p.weight = c.weight.data_ptr<int8_t>();
    p.bias = conv_bias.has_value() ? conv_bias->data_ptr<float>() : nullptr;
    p.u = c.u.data_ptr<int8_t>();
    p.x_scale = static_cast<float>(conv_input_scale(op, out_scales, sizes, conv_begin, C));
    p.weight_scale = static_cast<float>(conv_weight_scale);
    p.out_scale = static_cast<float>(conv_out_scale);
    p.out_scales = conv_out_scales.has_value() ? conv_out_scales->data_ptr<float>() : nullptr;
    return c;
}

// in_proj and the decode conv step in one op: x_q (b, K) -> codes (b, N), the conv step's u (b, C) and new state
// (b, C, k). Up to 16 sequences: one GEMV whose epilogue runs the conv; more: the prefill GEMM path, then the conv
// kernel on the codes' columns (two launches, the same values).
std::tuple<at::Tensor, at::Tensor, at::Tensor> int8_linear_quantize_conv_update(
        const at::Tensor& x_q, const at::Tensor& weight_q, const std::optional<at::Tensor>& bias, double x_scale,
        double weight_scale, const std::vector<double>& out_scales, const std::vector<int64_t>& sizes,
        int64_t conv_begin, const at::Tensor& conv_state, const at::Tensor& conv_weight,
        const std::optional<at::Tensor>& conv_bias, double conv_weight_scale, double conv_out_scale,
        const std::optional<at::Tensor>& conv_out_scales) {
    const char* op = "int8_linear_quantize_conv_update";
    const int64_t N = weight_q.size(0);
    const ek::OutScaleSegments segments = out_segments(op, out_scales, sizes, N);
    if (x_q.size(0) > 16) {  // the launches apart (causal_conv1d_impl checks the conv's tensors)
        const at::Tensor codes = int8_linear_quantize_any(op, x_q, weight_q, bias, x_scale, weight_scale, 1.0,
                                                          segments);
        const int64_t C = conv_state.size(1);
        auto [u, state_out] = causal_conv1d_impl(codes.narrow(1, conv_begin, C).unsqueeze(1), conv_state, conv_weight,
                                                 conv_bias, conv_input_scale(op, out_scales, sizes, conv_begin, C),
                                                 conv_weight_scale, conv_out_scale, conv_out_scales);
        return {codes, u.squeeze(1), state_out};
    }
    const ConvUpdate c = conv_update(op, x_q, N, out_scales, sizes, conv_begin, conv_state, conv_weight, conv_bias,
                                     conv_weight_scale, conv_out_scale, conv_out_scales);
    const at::Tensor codes = int8_linear_quantize_any(op, x_q, weight_q, bias, x_scale, weight_scale, 1.0, segments,
                                                      &c.params, static_cast<int>(conv_begin));
    return {codes, c.u, c.state_out};
}

// The scan; `finish` (when given) completes the params before the launch (the decode form that runs dt_proj).
std::tuple<at::Tensor, at::Tensor> selective_scan_impl(
    const at::Tensor& u_q, const at::Tensor& dt_q, const at::Tensor& B_q, const at::Tensor& C_q,
    const at::Tensor& z_q, const at::Tensor& ssm_state, const at::Tensor& A, const at::Tensor& D,
    const at::Tensor& dt_bias, double u_scale, double dt_scale, double B_scale, double C_scale, double z_scale,
    const std::function<void(ek::SelectiveScanParams&)>& finish = {}) {
    const char* names[] = {"u_q", "dt_q", "B_q", "C_q", "z_q"};
    const at::Tensor* ins[] = {&u_q, &dt_q, &B_q, &C_q, &z_q};
    for (int i = 0; i < 5; ++i) {
        check_cuda(*ins[i], names[i], at::kChar);
        EQ_CHECK(ins[i]->dim() == 3, "int8_selective_scan: ", names[i], " must be 3-D (b, l, .)");
    }
    check_cuda(ssm_state, "int8_selective_scan: ssm_state", at::kFloat);
    check_cuda(A, "int8_selective_scan: A", at::kFloat);
    check_cuda(D, "int8_selective_scan: D", at::kFloat);
    check_cuda(dt_bias, "int8_selective_scan: dt_bias", at::kFloat);
    const int64_t b = u_q.size(0), l = u_q.size(1), d = u_q.size(2), n = A.size(1);
    EQ_CHECK(dt_q.sizes() == u_q.sizes() && z_q.sizes() == u_q.sizes() && B_q.size(0) == b &&
                B_q.size(1) == l && B_q.size(2) == n && C_q.sizes() == B_q.sizes() && A.dim() == 2 &&
                A.size(0) == d && ssm_state.dim() == 3 && ssm_state.size(0) == b && ssm_state.size(1) == d &&
                ssm_state.size(2) == n && D.numel() == d && dt_bias.numel() == d,
                "int8_selective_scan: shapes do not match: u_q ", u_q.sizes(), ", B_q ", B_q.sizes(), ", A ",
                A.sizes(), ", ssm_state ", ssm_state.sizes());
    EQ_CHECK(n >= 1 && n <= 32 && (n & (n - 1)) == 0, "int8_selective_scan: d_state n=", n,
                " must be a power of two <= 32");
    const c10::cuda::CUDAGuard guard(u_q.device());
    const at::Tensor u = channel_contiguous(u_q), dt = channel_contiguous(dt_q), z = channel_contiguous(z_q);
    const at::Tensor Bv = channel_contiguous(B_q), Cv = channel_contiguous(C_q);
    const at::Tensor h = ssm_state.contiguous(), Ac = A.contiguous(), Dc = D.contiguous(), dtb = dt_bias.contiguous();
    at::Tensor y = at::empty({b, l, d}, u_q.options().dtype(at::kFloat));
    at::Tensor h_out = at::empty({b, d, n}, u_q.options().dtype(at::kFloat));
    ek::SelectiveScanParams p{};
    p.batch = static_cast<int>(b); p.seqlen = static_cast<int>(l); p.dim = static_cast<int>(d);
    p.dstate = static_cast<int>(n);
    p.u = u.data_ptr<int8_t>(); p.u_batch_stride = u.stride(0); p.u_seq_stride = u.stride(1);
    p.dt = dt.data_ptr<int8_t>(); p.dt_batch_stride = dt.stride(0); p.dt_seq_stride = dt.stride(1);
    p.z = z.data_ptr<int8_t>(); p.z_batch_stride = z.stride(0); p.z_seq_stride = z.stride(1);
    p.B = Bv.data_ptr<int8_t>(); p.B_batch_stride = Bv.stride(0); p.B_seq_stride = Bv.stride(1);
    p.C = Cv.data_ptr<int8_t>(); p.C_batch_stride = Cv.stride(0); p.C_seq_stride = Cv.stride(1);
    p.ssm_state_in = h.data_ptr<float>();
    p.A = Ac.data_ptr<float>(); p.D = Dc.data_ptr<float>(); p.dt_bias = dtb.data_ptr<float>();
    p.y = y.data_ptr<float>(); p.ssm_state_out = h_out.data_ptr<float>();
    p.u_scale = static_cast<float>(u_scale); p.dt_scale = static_cast<float>(dt_scale);
    p.B_scale = static_cast<float>(B_scale); p.C_scale = static_cast<float>(C_scale);
    p.z_scale = static_cast<float>(z_scale);
    if (finish) finish(p);
    check_launch(ek::launch_int8_selective_scan(p, c10::cuda::getCurrentCUDAStream()), "int8_selective_scan");
    return {y, h_out};
}

std::tuple<at::Tensor, at::Tensor> int8_selective_scan(
    const at::Tensor& u_q, const at::Tensor& dt_q, const at::Tensor& B_q, const at::Tensor& C_q,
    const at::Tensor& z_q, const at::Tensor& ssm_state, const at::Tensor& A, const at::Tensor& D,
    const at::Tensor& dt_bias, double u_scale, double dt_scale, double B_scale, double C_scale, double z_scale) {
    return selective_scan_impl(u_q, dt_q, B_q, C_q, z_q, ssm_state, A, D, dt_bias, u_scale, dt_scale, B_scale,
                               C_scale, z_scale);
}

// One decode token with dt_proj inside the scan (selective_scan.h): u_q, z_q (b, d_in), dt_r_q (b, r), B_q, C_q
// (b, n), dt_weight (d_in, r) -> (y (b, d_in), new state, dt_q (b, d_in) the codes dt_proj would have written).
std::tuple<at::Tensor, at::Tensor, at::Tensor> int8_selective_scan_dt_update(
    const at::Tensor& u_q, const at::Tensor& dt_r_q, const at::Tensor& B_q, const at::Tensor& C_q,
    const at::Tensor& z_q, const at::Tensor& ssm_state, const at::Tensor& A, const at::Tensor& D,
    const at::Tensor& dt_bias, const at::Tensor& dt_weight, double u_scale, double dt_r_scale,
    double dt_weight_scale, double dt_scale, double B_scale, double C_scale, double z_scale) {
    const char* op = "int8_selective_scan_dt_update";
    check_cuda(dt_r_q, op, at::kChar);
    check_cuda(dt_weight, op, at::kChar);
    EQ_CHECK(u_q.dim() == 2 && dt_r_q.dim() == 2 && dt_weight.dim() == 2 && dt_r_q.size(0) == u_q.size(0) &&
             dt_weight.size(0) == u_q.size(1) && dt_weight.size(1) == dt_r_q.size(1) && dt_r_q.size(1) >= 1 &&
             dt_r_q.stride(1) == 1 && dt_weight.is_contiguous(), op, ": expected u_q (b, d_in), dt_r_q (b, r) with "
             "channel stride 1 and dt_weight (d_in, r) contiguous, got ", u_q.sizes(), ", ", dt_r_q.sizes(), ", ",
             dt_weight.sizes());
    at::Tensor dt_q = at::empty(u_q.sizes(), u_q.options());
    // the scan's dt input is not read in this form: u_q stands in for its shape
    auto [y, h_out] = selective_scan_impl(
        u_q.unsqueeze(1), u_q.unsqueeze(1), B_q.unsqueeze(1), C_q.unsqueeze(1), z_q.unsqueeze(1), ssm_state, A, D,
        dt_bias, u_scale, dt_scale, B_scale, C_scale, z_scale, [&](ek::SelectiveScanParams& p) {
            p.dt_r = dt_r_q.data_ptr<int8_t>();
            p.dt_r_batch_stride = dt_r_q.stride(0);
            p.dt_weight = dt_weight.data_ptr<int8_t>();
            p.dt_rank = static_cast<int>(dt_r_q.size(1));
            p.dt_r_scale = static_cast<float>(dt_r_scale);
            p.dt_weight_scale = static_cast<float>(dt_weight_scale);
            p.dt_out = dt_q.data_ptr<int8_t>();
        });
    return {y.squeeze(1), h_out, dt_q};
}

at::Tensor hadamard_quantize(const at::Tensor& y, double out_scale) {
    check_cuda(y, "hadamard_quantize: y", at::kFloat);
    EQ_CHECK(y.dim() >= 1, "hadamard_quantize: y must have a channel dim");
    const int64_t n = y.size(-1);
    EQ_CHECK(n <= INT32_MAX && ek::hadamard_dim_supported(static_cast<int>(n)), "hadamard_quantize: n=", n,
                " is not m * 2^k with m in {1, 12, 20, 28} and n <= 16384");
    const c10::cuda::CUDAGuard guard(y.device());
    auto [yr, row_stride] = as_rows(y);
    at::Tensor q = at::empty(y.sizes(), y.options().dtype(at::kChar));
    ek::HadamardQuantizeParams p{};
    p.rows = yr.numel() / n;
    p.dim = static_cast<int>(n);
    p.y_row_stride = row_stride;
    p.y = yr.data_ptr<float>();
    p.y_q = q.data_ptr<int8_t>();
    p.out_scale = static_cast<float>(out_scale);
    check_launch(ek::launch_hadamard_quantize(p, c10::cuda::getCurrentCUDAStream()), "hadamard_quantize");
    return q;
}

// hadamard_quantize with a per-token scale: (y_q (..., n) int8, y_scale (...) float32), one kernel.
std::tuple<at::Tensor, at::Tensor> hadamard_quantize_dynamic(const at::Tensor& y) {
    check_cuda(y, "hadamard_quantize_dynamic: y", at::kFloat);
    EQ_CHECK(y.dim() >= 1, "hadamard_quantize_dynamic: y must have a channel dim");
    const int64_t n = y.size(-1);
    EQ_CHECK(n <= INT32_MAX && ek::hadamard_dim_supported(static_cast<int>(n)), "hadamard_quantize_dynamic: n=", n,
             " is not m * 2^k with m in {1, 12, 20, 28} and n <= 16384");
    const c10::cuda::CUDAGuard guard(y.device());
    auto [yr, row_stride] = as_rows(y);
    at::Tensor q = at::empty(y.sizes(), y.options().dtype(at::kChar));
    at::Tensor scale = at::empty(y.sizes().slice(0, y.dim() - 1), y.options());
    ek::HadamardQuantizeParams p{};
    p.rows = yr.numel() / n;
    p.dim = static_cast<int>(n);
    p.y_row_stride = row_stride;
    p.y = yr.data_ptr<float>();
    p.y_q = q.data_ptr<int8_t>();
    p.y_scale = scale.data_ptr<float>();
    check_launch(ek::launch_hadamard_quantize(p, c10::cuda::getCurrentCUDAStream()), "hadamard_quantize_dynamic");
    return {q, scale};
}


// ------------------------------------------------------------------------------------------------------------------
// 4-bit-weight linears (plugins/kernels/int4_linear.h): w4a8_linear, w4a8_linear_quantize, w4a16_linear. The weight
// is the artifact's packed buffer (N, ceil(K / 2)) uint8 with float32 scales (N, G); the launchers pick the GEMV
// (M <= 16) or the tensor-core GEMM themselves. Then W4A16's float16 scan (selective_scan).

// K, N, G of a 4-bit linear after checking x (..., K) of x_dtype, weight_packed, weight_scale and bias.
std::tuple<int64_t, int64_t, int64_t> check_int4_linear(const char* op, const at::Tensor& x, at::ScalarType x_dtype,
                                                        const at::Tensor& weight_packed, const at::Tensor& weight_scale,
                                                        const std::optional<at::Tensor>& bias, int64_t group_size) {
    check_cuda(x, op, x_dtype);
    check_cuda(weight_packed, op, at::kByte);
    check_cuda(weight_scale, op, at::kFloat);
    EQ_CHECK(x.dim() >= 1 && weight_packed.dim() == 2 && weight_scale.dim() == 2 && group_size >= 1, op,
             ": expected x (..., K), weight_packed (N, ceil(K / 2)), weight_scale (N, G), group_size >= 1");
    const int64_t K = x.size(-1), N = weight_packed.size(0), G = (K + group_size - 1) / group_size;
    EQ_CHECK(K >= 1 && K <= 131071 && G <= ek::kInt4MaxGroups, op, ": K=", K, " or G=", G, " out of range");
    EQ_CHECK(weight_packed.size(1) == (K + 1) / 2 && weight_packed.is_contiguous() && weight_scale.size(0) == N &&
             weight_scale.size(1) == G && weight_scale.is_contiguous(), op, ": weight_packed ", weight_packed.sizes(),
             " / weight_scale ", weight_scale.sizes(), " do not fit x ", x.sizes(), " with group size ", group_size);
    if (bias.has_value()) {
        check_cuda(*bias, op, at::kFloat);
        EQ_CHECK(bias->dim() == 1 && bias->size(0) == N && bias->is_contiguous(), op,
                 ": bias must be a contiguous (N,) float32 tensor");
    }
    return {K, N, G};
}

// w4a8_linear (quantize == false: float32 out; with residual: residual + y, in the GEMV's epilogue up to 16 rows)
// and w4a8_linear_quantize (int8 out at out_scale or segments; with conv (M <= 16 only, the caller's check): the
// GEMV's epilogue also runs that conv step).
at::Tensor w4a8_linear_any(const char* op, const at::Tensor& x_q, const at::Tensor& weight_packed,
                           const at::Tensor& weight_scale, const std::optional<at::Tensor>& bias, double x_scale,
                           int64_t group_size, bool quantize, double out_scale,
                           const ek::OutScaleSegments& segments = {}, const ek::CausalConv1dParams* conv = nullptr,
                           int conv_begin = 0, const std::optional<at::Tensor>& residual = std::nullopt) {
    const auto [K, N, G] = check_int4_linear(op, x_q, at::kChar, weight_packed, weight_scale, bias, group_size);
    const c10::cuda::CUDAGuard guard(x_q.device());
    auto out_sizes = x_q.sizes().vec();
    out_sizes.back() = N;
    auto [xr, row_stride] = as_rows(x_q);
    const int64_t M = xr.numel() / K;
    at::Tensor y = at::empty(out_sizes, x_q.options().dtype(quantize ? at::kChar : at::kFloat));
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    if (quantize) {
        ek::W4A8LinearQuantizeParams p{};
        p.M = M; p.N = static_cast<int>(N); p.K = static_cast<int>(K); p.group_size = static_cast<int>(group_size);
        p.x = xr.data_ptr<int8_t>(); p.x_row_stride = row_stride;
        p.w_packed = weight_packed.data_ptr<uint8_t>(); p.w_scale = weight_scale.data_ptr<float>();
        p.bias = bias.has_value() ? bias->data_ptr<float>() : nullptr;
        p.y_q = y.data_ptr<int8_t>(); p.y_row_stride = N;
        p.x_scale = static_cast<float>(x_scale); p.out_scale = static_cast<float>(out_scale);
        p.out_segments = segments;
        if (conv != nullptr) {
            p.conv = *conv;
            p.conv_begin = conv_begin;
        }
        check_launch(ek::launch_w4a8_linear_quantize(p, stream), op);
    } else {
        ek::W4A8LinearParams p{};
        p.M = M; p.N = static_cast<int>(N); p.K = static_cast<int>(K); p.group_size = static_cast<int>(group_size);
        p.x = xr.data_ptr<int8_t>(); p.x_row_stride = row_stride;
        p.w_packed = weight_packed.data_ptr<uint8_t>(); p.w_scale = weight_scale.data_ptr<float>();
        p.bias = bias.has_value() ? bias->data_ptr<float>() : nullptr;
        p.y = y.data_ptr<float>(); p.y_row_stride = N;
        p.x_scale = static_cast<float>(x_scale);
        const at::Tensor res = residual.has_value() ? residual->reshape({M, N}).contiguous() : at::Tensor();
        if (residual.has_value() && M <= 16) {
            p.residual = res.data_ptr<float>();
            p.residual_row_stride = N;
        }
        check_launch(ek::launch_w4a8_linear(p, stream), op);
        if (residual.has_value() && M > 16) y.view({M, N}).add_(res);  // y + residual == residual + y in IEEE
    }
    return y;
}

at::Tensor w4a8_linear(const at::Tensor& x_q, const at::Tensor& weight_packed, const at::Tensor& weight_scale,
                       const std::optional<at::Tensor>& bias, double x_scale, int64_t group_size) {
    return w4a8_linear_any("w4a8_linear", x_q, weight_packed, weight_scale, bias, x_scale, group_size, false, 1.0);
}

at::Tensor w4a8_linear_quantize(const at::Tensor& x_q, const at::Tensor& weight_packed, const at::Tensor& weight_scale,
                                const std::optional<at::Tensor>& bias, double x_scale, int64_t group_size,
                                double out_scale) {
    return w4a8_linear_any("w4a8_linear_quantize", x_q, weight_packed, weight_scale, bias, x_scale, group_size, true,
                           out_scale);
}

at::Tensor w4a8_linear_quantize_segments(const at::Tensor& x_q, const at::Tensor& weight_packed,
                                         const at::Tensor& weight_scale, const std::optional<at::Tensor>& bias,
                                         double x_scale, int64_t group_size, const std::vector<double>& out_scales,
                                         const std::vector<int64_t>& sizes) {
    const char* op = "w4a8_linear_quantize_segments";
    return w4a8_linear_any(op, x_q, weight_packed, weight_scale, bias, x_scale, group_size, true, 1.0,
                           out_segments(op, out_scales, sizes, weight_packed.size(0)));
}

// residual + w4a8_linear(...) (out_proj with the block's residual add): residual (..., N) float32.
at::Tensor w4a8_linear_residual(const at::Tensor& x_q, const at::Tensor& weight_packed, const at::Tensor& weight_scale,
                                const std::optional<at::Tensor>& bias, double x_scale, int64_t group_size,
                                const at::Tensor& residual) {
    check_cuda(residual, "w4a8_linear_residual: residual", at::kFloat);
    auto out_sizes = x_q.sizes().vec();
    out_sizes.back() = weight_packed.size(0);
    EQ_CHECK(residual.sizes().vec() == out_sizes, "w4a8_linear_residual: residual ", residual.sizes(),
             " is not the output's shape");
    return w4a8_linear_any("w4a8_linear_residual", x_q, weight_packed, weight_scale, bias, x_scale, group_size, false,
                           1.0, {}, nullptr, 0, residual);
}

// W4A8 in_proj and the decode conv step in one op (int8_linear_quantize_conv_update with 4-bit weights).
std::tuple<at::Tensor, at::Tensor, at::Tensor> w4a8_linear_quantize_conv_update(
        const at::Tensor& x_q, const at::Tensor& weight_packed, const at::Tensor& weight_scale,
        const std::optional<at::Tensor>& bias, double x_scale, int64_t group_size,
        const std::vector<double>& out_scales, const std::vector<int64_t>& sizes, int64_t conv_begin,
        const at::Tensor& conv_state, const at::Tensor& conv_weight, const std::optional<at::Tensor>& conv_bias,
        double conv_weight_scale, double conv_out_scale, const std::optional<at::Tensor>& conv_out_scales) {
    const char* op = "w4a8_linear_quantize_conv_update";
    const int64_t N = weight_packed.size(0);
    const ek::OutScaleSegments segments = out_segments(op, out_scales, sizes, N);
    if (x_q.size(0) > 16) {  // the launches apart (causal_conv1d_impl checks the conv's tensors)
        const at::Tensor codes = w4a8_linear_any(op, x_q, weight_packed, weight_scale, bias, x_scale, group_size, true,
                                                 1.0, segments);
        const int64_t C = conv_state.size(1);
        auto [u, state_out] = causal_conv1d_impl(codes.narrow(1, conv_begin, C).unsqueeze(1), conv_state, conv_weight,
                                                 conv_bias, conv_input_scale(op, out_scales, sizes, conv_begin, C),
                                                 conv_weight_scale, conv_out_scale, conv_out_scales);
        return {codes, u.squeeze(1), state_out};
    }
    const ConvUpdate c = conv_update(op, x_q, N, out_scales, sizes, conv_begin, conv_state, conv_weight, conv_bias,
                                     conv_weight_scale, conv_out_scale, conv_out_scales);
    const at::Tensor codes = w4a8_linear_any(op, x_q, weight_packed, weight_scale, bias, x_scale, group_size, true,
                                             1.0, segments, &c.params, static_cast<int>(conv_begin));
    return {codes, c.u, c.state_out};
}

at::Tensor w4a16_linear(const at::Tensor& x, const at::Tensor& weight_packed, const at::Tensor& weight_scale,
                        const std::optional<at::Tensor>& bias, int64_t group_size) {
    const auto [K, N, G] = check_int4_linear("w4a16_linear", x, at::kHalf, weight_packed, weight_scale, bias,
                                             group_size);
    const c10::cuda::CUDAGuard guard(x.device());
    auto out_sizes = x.sizes().vec();
    out_sizes.back() = N;
    auto [xr, row_stride] = as_rows(x);
    at::Tensor y = at::empty(out_sizes, x.options());
    ek::W4A16LinearParams p{};
    p.M = xr.numel() / K; p.N = static_cast<int>(N); p.K = static_cast<int>(K);
    p.group_size = static_cast<int>(group_size);
    p.x = reinterpret_cast<const __half*>(xr.data_ptr<at::Half>()); p.x_row_stride = row_stride;
    p.w_packed = weight_packed.data_ptr<uint8_t>(); p.w_scale = weight_scale.data_ptr<float>();
    p.bias = bias.has_value() ? bias->data_ptr<float>() : nullptr;
    p.y = reinterpret_cast<__half*>(y.data_ptr<at::Half>()); p.y_row_stride = N;
    check_launch(ek::launch_w4a16_linear(p, c10::cuda::getCurrentCUDAStream()), "w4a16_linear");
    return y;
}

// The fp reference's prefill scan on W4A16's float16 tensors (op edge_quamba::selective_scan): u (b, l, d) float16,
// delta (b, l, d) float32, A (d, n) float32, B, C (b, l, n) float16, D (d) float16, ssm_state (b, d, n) float32
// -> (y (b, l, d) float32, ssm_state_out (b, d, n) float32).
std::tuple<at::Tensor, at::Tensor> selective_scan(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                                  const at::Tensor& B, const at::Tensor& C, const at::Tensor& D,
                                                  const at::Tensor& ssm_state) {
    check_cuda(u, "selective_scan: u", at::kHalf);
    check_cuda(delta, "selective_scan: delta", at::kFloat);
    check_cuda(A, "selective_scan: A", at::kFloat);
    check_cuda(B, "selective_scan: B", at::kHalf);
    check_cuda(C, "selective_scan: C", at::kHalf);
    check_cuda(D, "selective_scan: D", at::kHalf);
    check_cuda(ssm_state, "selective_scan: ssm_state", at::kFloat);
    EQ_CHECK(u.dim() == 3 && B.dim() == 3 && A.dim() == 2 && ssm_state.dim() == 3,
             "selective_scan: expected u (b, l, d), B, C (b, l, n), A (d, n), ssm_state (b, d, n)");
    const int64_t b = u.size(0), l = u.size(1), d = u.size(2), n = A.size(1);
    EQ_CHECK(delta.sizes() == u.sizes() && B.size(0) == b && B.size(1) == l && B.size(2) == n &&
             C.sizes() == B.sizes() && A.size(0) == d && D.numel() == d && ssm_state.size(0) == b &&
             ssm_state.size(1) == d && ssm_state.size(2) == n, "selective_scan: shapes do not match: u ", u.sizes(),
             ", B ", B.sizes(), ", A ", A.sizes(), ", ssm_state ", ssm_state.sizes());
    EQ_CHECK(n >= 1 && n <= 32 && (n & (n - 1)) == 0, "selective_scan: d_state n=", n,
             " must be a power of two <= 32");
    const c10::cuda::CUDAGuard guard(u.device());
    const at::Tensor uc = channel_contiguous(u), dc = channel_contiguous(delta);
    const at::Tensor Bc = channel_contiguous(B), Cc = channel_contiguous(C);
    const at::Tensor h = ssm_state.contiguous(), Ac = A.contiguous(), Dc = D.contiguous();
    at::Tensor y = at::empty({b, l, d}, u.options().dtype(at::kFloat));
    at::Tensor h_out = at::empty({b, d, n}, u.options().dtype(at::kFloat));
    ek::SelectiveScanF16Params p{};
    p.batch = static_cast<int>(b); p.seqlen = static_cast<int>(l); p.dim = static_cast<int>(d);
    p.dstate = static_cast<int>(n);
    p.u = reinterpret_cast<const __half*>(uc.data_ptr<at::Half>());
    p.u_batch_stride = uc.stride(0); p.u_seq_stride = uc.stride(1);
    p.delta = dc.data_ptr<float>(); p.delta_batch_stride = dc.stride(0); p.delta_seq_stride = dc.stride(1);
    p.B = reinterpret_cast<const __half*>(Bc.data_ptr<at::Half>());
    p.B_batch_stride = Bc.stride(0); p.B_seq_stride = Bc.stride(1);
    p.C = reinterpret_cast<const __half*>(Cc.data_ptr<at::Half>());
    p.C_batch_stride = Cc.stride(0); p.C_seq_stride = Cc.stride(1);
    p.A = Ac.data_ptr<float>();
    p.D = reinterpret_cast<const __half*>(Dc.data_ptr<at::Half>());
    p.ssm_state_in = h.data_ptr<float>();
    p.y = y.data_ptr<float>(); p.ssm_state_out = h_out.data_ptr<float>();
    check_launch(ek::launch_selective_scan_f16(p, c10::cuda::getCurrentCUDAStream()), "selective_scan");
    return {y, h_out};
}
// ------------------------------------------------------------------- end of the 4-bit-weight linears and W4A16 scan
}  // namespace

// ------------------------------------------------------------------------------------------- Mamba2 (Quamba2) ops
// int8_causal_conv1d_channel_scales, int8_ssd_scan and the fused gated RMSNorm + (Hadamard +) quantize of the out_proj
// input (edge_quamba/ops/cuda_ops.py registers them for torch.ops.edge_quamba.*; the *_update ops are the same
// functions on (b, 1, .) views).
namespace {

// Mamba2's conv over x | B | C: the int8 conv with a per-channel output scale out_scales (conv_dim,) float32.
std::tuple<at::Tensor, at::Tensor> int8_causal_conv1d_channel_scales(
    const at::Tensor& x_q, const at::Tensor& conv_state_q, const at::Tensor& weight_q,
    const std::optional<at::Tensor>& bias, const at::Tensor& out_scales, double x_scale, double weight_scale) {
    return causal_conv1d_impl(x_q, conv_state_q, weight_q, bias, x_scale, weight_scale, 1.0, out_scales);
}

// The SSD scan: x_q (b, l, h p), dt_q (b, l, h), B_q, C_q (b, l, g n) int8 views (channel stride 1, any batch and
// sequence strides), ssm_state (b, h, p, n) float32 -> (y (b, l, h p) float32, new state (b, h, p, n)).
std::tuple<at::Tensor, at::Tensor> int8_ssd_scan(
    const at::Tensor& x_q, const at::Tensor& dt_q, const at::Tensor& B_q, const at::Tensor& C_q,
    const at::Tensor& ssm_state, const at::Tensor& A, const at::Tensor& D, const at::Tensor& dt_bias,
    const at::Tensor& x_scales, const at::Tensor& B_scales, const at::Tensor& C_scales, double dt_scale) {
    const char* names[] = {"x_q", "dt_q", "B_q", "C_q"};
    const at::Tensor* ins[] = {&x_q, &dt_q, &B_q, &C_q};
    for (int i = 0; i < 4; ++i) {
        check_cuda(*ins[i], names[i], at::kChar);
        EQ_CHECK(ins[i]->dim() == 3, "int8_ssd_scan: ", names[i], " must be 3-D (b, l, .)");
    }
    const char* fnames[] = {"ssm_state", "A", "D", "dt_bias", "x_scales", "B_scales", "C_scales"};
    const at::Tensor* fins[] = {&ssm_state, &A, &D, &dt_bias, &x_scales, &B_scales, &C_scales};
    for (int i = 0; i < 7; ++i) check_cuda(*fins[i], fnames[i], at::kFloat);
    EQ_CHECK(ssm_state.dim() == 4, "int8_ssd_scan: ssm_state must be (b, h, p, n)");
    const int64_t b = x_q.size(0), l = x_q.size(1), h = ssm_state.size(1), hp = ssm_state.size(2),
                  n = ssm_state.size(3), gn = B_q.size(2);
    EQ_CHECK(n >= 1 && n <= ek::kSsdMaxState && gn % n == 0 && gn >= n && h % (gn / n) == 0,
             "int8_ssd_scan: d_state n=", n, " (<= ", ek::kSsdMaxState, ") and B_q's g n=", gn, " do not fit h=", h);
    EQ_CHECK(ssm_state.size(0) == b && x_q.size(2) == h * hp && dt_q.size(0) == b && dt_q.size(1) == l &&
             dt_q.size(2) == h && B_q.size(0) == b && B_q.size(1) == l && C_q.sizes() == B_q.sizes() &&
             A.numel() == h && D.numel() == h && dt_bias.numel() == h && x_scales.numel() == h * hp &&
             B_scales.numel() == gn && C_scales.numel() == gn,
             "int8_ssd_scan: shapes do not match: x_q ", x_q.sizes(), ", dt_q ", dt_q.sizes(), ", B_q ", B_q.sizes(),
             ", ssm_state ", ssm_state.sizes());
    const c10::cuda::CUDAGuard guard(x_q.device());
    const at::Tensor x = channel_contiguous(x_q), dt = channel_contiguous(dt_q);
    const at::Tensor Bv = channel_contiguous(B_q), Cv = channel_contiguous(C_q);
    const at::Tensor state = ssm_state.contiguous(), Ac = A.contiguous(), Dc = D.contiguous(),
                     dtb = dt_bias.contiguous(), xs = x_scales.contiguous(), bs = B_scales.contiguous(),
                     cs = C_scales.contiguous();
    at::Tensor y = at::empty({b, l, h * hp}, x_q.options().dtype(at::kFloat));
    at::Tensor state_out = at::empty({b, h, hp, n}, x_q.options().dtype(at::kFloat));
    ek::SsdScanParams p{};
    p.batch = static_cast<int>(b); p.seqlen = static_cast<int>(l); p.nheads = static_cast<int>(h);
    p.headdim = static_cast<int>(hp); p.ngroups = static_cast<int>(gn / n); p.dstate = static_cast<int>(n);
    p.x = x.data_ptr<int8_t>(); p.x_batch_stride = x.stride(0); p.x_seq_stride = x.stride(1);
    p.dt = dt.data_ptr<int8_t>(); p.dt_batch_stride = dt.stride(0); p.dt_seq_stride = dt.stride(1);
    p.B = Bv.data_ptr<int8_t>(); p.B_batch_stride = Bv.stride(0); p.B_seq_stride = Bv.stride(1);
    p.C = Cv.data_ptr<int8_t>(); p.C_batch_stride = Cv.stride(0); p.C_seq_stride = Cv.stride(1);
    p.ssm_state_in = state.data_ptr<float>();
    p.A = Ac.data_ptr<float>(); p.D = Dc.data_ptr<float>(); p.dt_bias = dtb.data_ptr<float>();
    p.x_scales = xs.data_ptr<float>(); p.B_scales = bs.data_ptr<float>(); p.C_scales = cs.data_ptr<float>();
    p.dt_scale = static_cast<float>(dt_scale);
    p.y = y.data_ptr<float>(); p.ssm_state_out = state_out.data_ptr<float>();
    check_launch(ek::launch_int8_ssd_scan(p, c10::cuda::getCurrentCUDAStream()), "int8_ssd_scan");
    return {y, state_out};
}

// gated_rms_norm_quantize (hadamard false) and gated_rms_norm_hadamard_quantize (true): y (..., d) float32 and z_q
// (..., d) int8 (row-strided views read in place), weight (d) -> int8 (..., d), one kernel.
at::Tensor gated_rms_norm_quantize(const at::Tensor& y, const at::Tensor& z_q, const at::Tensor& weight,
                                   double z_scale, double eps, int64_t group_size, double out_scale, bool hadamard) {
    check_cuda(y, "gated_rms_norm_quantize: y", at::kFloat);
    check_cuda(z_q, "gated_rms_norm_quantize: z_q", at::kChar);
    check_cuda(weight, "gated_rms_norm_quantize: weight", at::kFloat);
    EQ_CHECK(y.dim() >= 1 && z_q.sizes() == y.sizes() && weight.dim() == 1 && weight.size(0) == y.size(-1) &&
             weight.is_contiguous(), "gated_rms_norm_quantize: y ", y.sizes(), ", z_q ", z_q.sizes(), " and weight ",
             weight.sizes(), " do not match (..., d), (..., d), (d,)");
    const int64_t d = y.size(-1);
    EQ_CHECK(d >= 1 && d <= INT32_MAX && group_size >= 1 && d % group_size == 0,
             "gated_rms_norm_quantize: group_size ", group_size, " does not divide d=", d);
    if (hadamard) {
        EQ_CHECK(ek::hadamard_dim_supported(static_cast<int>(d)), "gated_rms_norm_hadamard_quantize: d=", d,
                 " is not m * 2^k with m in {1, 12, 20, 28} and d <= 16384");
    } else {
        EQ_CHECK(group_size <= ek::kRmsNormMaxDim, "gated_rms_norm_quantize: group_size ", group_size, " > ",
                 ek::kRmsNormMaxDim);
    }
    const c10::cuda::CUDAGuard guard(y.device());
    auto [yr, y_stride] = as_rows(y);
    auto [zr, z_stride] = as_rows(z_q);
    at::Tensor q = at::empty(y.sizes(), y.options().dtype(at::kChar));
    ek::GatedRmsNormQuantizeParams p{};
    p.rows = yr.numel() / d;
    p.dim = static_cast<int>(d);
    p.group_size = static_cast<int>(group_size);
    p.y_row_stride = y_stride;
    p.y = yr.data_ptr<float>();
    p.z_row_stride = z_stride;
    p.z = zr.data_ptr<int8_t>();
    p.weight = weight.data_ptr<float>();
    p.y_q = q.data_ptr<int8_t>();
    p.z_scale = static_cast<float>(z_scale);
    p.eps = static_cast<float>(eps);
    p.out_scale = static_cast<float>(out_scale);
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    check_launch(hadamard ? ek::launch_gated_rms_norm_hadamard_quantize(p, stream)
                          : ek::launch_gated_rms_norm_quantize(p, stream), "gated_rms_norm_quantize");
    return q;
}

void def_mamba2_ops(pybind11::module_& m) {
    m.def("int8_causal_conv1d_channel_scales", &int8_causal_conv1d_channel_scales,
          "x_q (b, l, conv_dim), state, weight, bias?, out_scales (conv_dim) -> (codes (b, l, conv_dim), new state)");
    m.def("int8_ssd_scan", &int8_ssd_scan, "-> (y (b, l, h p) float32, ssm_state_out (b, h, p, n) float32)");
    m.def("gated_rms_norm_quantize", &gated_rms_norm_quantize,
          "y (..., d) float32, z_q (..., d) int8, weight (d), z_scale, eps, group_size, out_scale, hadamard -> int8");
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.doc() = "edge-quamba int8 CUDA kernels (plugins/kernels) for torch.ops.edge_quamba.*";
    m.def("set_programmatic_launch", &ek::set_programmatic_launch,
          "on: the decode kernels' launches carry the programmatic-dependent-launch attribute (kernels/common.h)");
    def_mamba2_ops(m);
    m.def("quantize", &quantize, "x (...) float -> int8 (...)");
    m.def("int8_linear", &int8_linear, "x_q (..., K), weight_q (N, K), bias? -> float32 (..., N)");
    m.def("int8_linear_quantize", &int8_linear_quantize, "x_q (..., K), weight_q (N, K), bias? -> int8 (..., N)");
    m.def("int8_linear_residual", &int8_linear_residual, "residual + int8_linear(...) -> float32 (..., N)");
    m.def("int8_linear_quantize_conv_update", &int8_linear_quantize_conv_update,
          "in_proj with the decode conv step over its columns [conv_begin, + C) -> (codes, u, conv_state_out)");
    m.def("int8_linear_quantize_segments", &int8_linear_quantize_segments,
          "int8_linear_quantize with a scale per consecutive column segment -> int8 (..., N)");
    m.def("rms_norm_quantize", &rms_norm_quantize, "x (..., d) float32, weight (d) -> int8 (..., d)");
    m.def("int8_causal_conv1d", &int8_causal_conv1d, "-> (u_q (b, l, d_in), conv_state_out (b, d_in, k))");
    m.def("int8_selective_scan", &int8_selective_scan, "-> (y (b, l, d_in), ssm_state_out (b, d_in, n))");
    m.def("int8_selective_scan_dt_update", &int8_selective_scan_dt_update,
          "one token with dt_proj inside -> (y (b, d_in), ssm_state_out (b, d_in, n), dt_q (b, d_in))");
    m.def("hadamard_quantize", &hadamard_quantize, "y (..., n) float32 -> int8 (..., n)");
    m.def("hadamard_quantize_dynamic", &hadamard_quantize_dynamic,
          "y (..., n) float32 -> (int8 (..., n), per-token scale float32 (...))");
    m.def("int8_linear_per_token", &int8_linear_per_token,
          "x_q (..., K), weight_q (N, K), bias?, x_scale (...) float32 -> float32 (..., N)");
    // 4-bit-weight linears and W4A16's scan
    m.def("w4a8_linear", &w4a8_linear,
          "x_q (..., K) int8, weight_packed (N, ceil(K/2)) uint8, weight_scale (N, G), bias?, x_scale, group_size "
          "-> float32 (..., N)");
    m.def("w4a8_linear_quantize", &w4a8_linear_quantize, "w4a8_linear, then quantize at out_scale -> int8 (..., N)");
    m.def("w4a8_linear_residual", &w4a8_linear_residual, "residual + w4a8_linear(...) -> float32 (..., N)");
    m.def("w4a8_linear_quantize_conv_update", &w4a8_linear_quantize_conv_update,
          "W4A8 in_proj with the decode conv step over its columns [conv_begin, + C) -> (codes, u, conv_state_out)");
    m.def("w4a8_linear_quantize_segments", &w4a8_linear_quantize_segments,
          "w4a8_linear, then each consecutive column segment quantized at its scale -> int8 (..., N)");
    m.def("w4a16_linear", &w4a16_linear,
          "x (..., K) float16, weight_packed (N, ceil(K/2)) uint8, weight_scale (N, G), bias?, group_size "
          "-> float16 (..., N)");
    m.def("selective_scan", &selective_scan,
          "W4A16 scan: u (b, l, d) f16, delta f32, A, B, C f16, D f16, ssm_state -> (y f32, ssm_state_out)");
}
