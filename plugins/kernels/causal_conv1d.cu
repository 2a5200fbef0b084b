// int8_causal_conv1d; see causal_conv1d.h for the contract.
//
// Memory layout and work split:
//   x (b, l, d) int8 with channel stride 1: for a fixed t the channels are contiguous, so a block of 128 threads,
//   one channel each, reads 128 consecutive bytes per timestep (coalesced). blockIdx.y splits the sequence into
//   chunks of kChunk timesteps, processed independently (the conv only looks back k - 1 <= 3 steps, which a chunk
//   reads from x, or from the state for the first chunk), so prefill is parallel over (batch, channel, chunk).
//   Each thread keeps the last k inputs in registers and slides the window one timestep at a time.
//   conv_state (b, d, k): input index t < 0 of this call is conv_state_in[b, c, k + t]. The thread of the first
//   chunk reads its channel's whole state before it writes conv_state_out, and no other thread touches that
//   channel's state, so conv_state_out may alias conv_state_in.
// Numerics: exact int32 accumulation; then float32(acc) * float32(x_scale * weight_scale), + bias, SiLU, quantize at
// out_scale or at the channel's out_scales[c] (read once per thread), every op rounded separately (numerics.cuh).
// Input and state codes are read with read_code (-128 as -127), and the state is written as read, so conv_state_out
// never holds -128.
#include <algorithm>
#include <cmath>

#include "causal_conv1d.h"
#include "numerics.cuh"

namespace edge_quamba {
namespace kernels {
namespace {

constexpr int kThreads = 128;
constexpr int kChunk = 64;  // timesteps per thread (>= kConvMaxWidth - 1)

template <int W>
__global__ void __launch_bounds__(kThreads) causal_conv1d_kernel(CausalConv1dParams p) {
    wait_for_producer();  // PDL (common.h): nothing read or written before the previous kernel is done
    const int c = blockIdx.x * kThreads + threadIdx.x;
    const int b = blockIdx.z;
    if (c >= p.dim) return;
    const int t0 = blockIdx.y * kChunk;
    const int t1 = min(t0 + kChunk, p.seqlen);
    const int8_t* x = p.x + int64_t(b) * p.x_batch_stride + c;  // x[t] at x + t * x_seq_stride
    const int8_t* state_in = p.conv_state_in + (int64_t(b) * p.dim + c) * W;

    int w[W];
#pragma unroll
    for (int j = 0; j < W; ++j) w[j] = p.weight[int64_t(c) * W + j];

    // win[j] = input t - W + 1 + j for the next t; filled with the W - 1 inputs before t0.
    int win[W];
    int state[W];
    if (t0 == 0) {
#pragma unroll
        for (int j = 0; j < W; ++j) state[j] = read_code(state_in[j]);
    }
#pragma unroll
    for (int j = 0; j < W - 1; ++j) {
        const int t = t0 - (W - 1) + j;
        win[j + 1] = t < 0 ? state[W + t] : read_code(x[int64_t(t) * p.x_seq_stride]);
    }

    const float alpha = __fmul_rn(p.x_scale, p.weight_scale);
    const float bias = p.bias != nullptr ? p.bias[c] : 0.0f;
    const float out_scale = p.out_scales != nullptr ? p.out_scales[c] : p.out_scale;
    int8_t* u = p.u + int64_t(b) * p.seqlen * p.dim + c;
    for (int t = t0; t < t1; ++t) {
#pragma unroll
        for (int j = 0; j < W - 1; ++j) win[j] = win[j + 1];
        win[W - 1] = read_code(x[int64_t(t) * p.x_seq_stride]);
        int acc = 0;
#pragma unroll
        for (int j = 0; j < W; ++j) acc += w[j] * win[j];
        u[int64_t(t) * p.dim] = conv_output_rn(acc, alpha, p.bias, bias, out_scale);
    }

    if (t0 == 0) {  // the new state: inputs l - W .. l - 1 (state entries when l < W)
        int8_t* state_out = p.conv_state_out + (int64_t(b) * p.dim + c) * W;
#pragma unroll
        for (int j = 0; j < W; ++j) {
            const int t = p.seqlen - W + j;
            state_out[j] = static_cast<int8_t>(t < 0 ? state[W + t] : read_code(x[int64_t(t) * p.x_seq_stride]));
        }
    }
}

}  // namespace

cudaError_t launch_int8_causal_conv1d(const CausalConv1dParams& p, cudaStream_t stream) {
    if (p.batch < 0 || p.seqlen < 0 || p.dim < 0 || p.width < 1 || p.width > kConvMaxWidth ||
        (p.out_scales == nullptr && (!(p.out_scale > 0.0f) || !std::isfinite(p.out_scale))) || p.batch > 65535) {
        return cudaErrorInvalidValue;
    }
    if (p.batch == 0 || p.dim == 0) return cudaSuccess;
    if (p.conv_state_in == nullptr || p.conv_state_out == nullptr || p.weight == nullptr ||
        (p.seqlen > 0 && (p.x == nullptr || p.u == nullptr))) {
        return cudaErrorInvalidValue;
    }
    // seqlen == 0 still runs one chunk: it copies the state through.
    const dim3 grid((p.dim + kThreads - 1) / kThreads, std::max(1, (p.seqlen + kChunk - 1) / kChunk), p.batch);
    switch (p.width) {
        case 1: return launch_kernel(causal_conv1d_kernel<1>, grid, kThreads, 0, stream, p);
        case 2: return launch_kernel(causal_conv1d_kernel<2>, grid, kThreads, 0, stream, p);
        case 3: return launch_kernel(causal_conv1d_kernel<3>, grid, kThreads, 0, stream, p);
        default: return launch_kernel(causal_conv1d_kernel<4>, grid, kThreads, 0, stream, p);
    }
}

}  // namespace kernels
}  // namespace edge_quamba
