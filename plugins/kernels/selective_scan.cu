// int8_selective_scan and selective_scan_f16; see selective_scan.h for the contracts and the float orders.
//
// Memory layout and work split:
//   A group of G = dstate adjacent lanes owns one (batch b, channel d); lane s holds h[b, d, s] in a register for the
//   whole sequence (the state (b, d, n) is contiguous, so a warp's state loads and stores are coalesced). A block
//   of 128 threads holds 128 / G channels; grid = (channel blocks, batch).
//   The sequence is walked in chunks of G timesteps. In a chunk, lane j of each group first computes the
//   per-channel scalars of timestep t0 + j (u, delta = softplus(dt + dt_bias), delta * u, D * u, silu(z): one
//   softplus and two expf per channel and timestep instead of per state), then the group steps through the chunk,
//   broadcasting delta and delta * u with __shfl_sync. B[t, s] and C[t, s] are read by lane s (the same 16 bytes for
//   every channel of the block: L1 broadcast). y[t] is the shuffle-tree sum over the group of h[s] * C[t, s]: in a
//   whole chunk, lane s keeps its G products and one transposed reduction (transpose_sum) leaves the sum of step
//   t0 + s in lane s, which holds that step's D * u and gate and writes y[t0 + s]; in a partial chunk (decode's l = 1,
//   a prompt's tail) each step is summed by the xor tree and written by lane 0. Both pair the same values in the same
//   order, so y does not depend on the chunking.
// Numerics: every op an explicitly rounded intrinsic (no FMA), accurate expf / log1pf (numerics.cuh); int8 codes are
// read with read_code (-128 as -127).
#include <cmath>

#include "numerics.cuh"
#include "selective_scan.h"

namespace edge_quamba {
namespace kernels {
namespace {

constexpr int kThreads = 128;

// Lane s of a group of G lanes, each holding v[j] for the G steps j of a chunk -> the sum over the group of v[s].
// Recursive halving: in the round of offset o = G/2, ..., 1 a lane keeps the steps whose bit o equals its own, sends
// the others to lane s ^ o and adds what it receives, so every step's sum pairs the same values in the same order
// as the per-step tree v + shfl_xor(v, o) (bit-identical), with G - 1 shuffles for G steps instead of G log2 G.
template <int G>
__device__ __forceinline__ float transpose_sum(float (&v)[G], int s) {
#pragma unroll
    for (int o = G / 2; o > 0; o /= 2) {
        const bool upper = (s & o) != 0;  // after this round v[i] (i < o) is step i + (s & o) of the remaining half
#pragma unroll
        for (int i = 0; i < o; ++i) {
            const float send = upper ? v[i] : v[i + o];
            const float keep = upper ? v[i + o] : v[i];
            v[i] = __fadd_rn(keep, __shfl_xor_sync(0xffffffffu, send, o, G));
        }
    }
    return v[0];
}

// The per-step tree of transpose_sum: every lane gets the sum over the group of v.
template <int G>
__device__ __forceinline__ float tree_sum(float v) {
#pragma unroll
    for (int off = G / 2; off > 0; off /= 2) v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, off, G));
    return v;
}

template <int G>
__global__ void __launch_bounds__(kThreads) selective_scan_kernel(SelectiveScanParams p) {
    wait_for_producer();  // PDL (common.h): nothing read or written before the previous kernel is done
    const int s = threadIdx.x % G;
    const int d_raw = blockIdx.x * (kThreads / G) + threadIdx.x / G;
    const bool valid = d_raw < p.dim;
    const int d = valid ? d_raw : p.dim - 1;  // lanes past dim compute a copy and store nothing (shuffles need them)
    const int b = blockIdx.y;

    const int64_t state_idx = (int64_t(b) * p.dim + d) * G + s;
    float h = p.ssm_state_in[state_idx];
    const float a = p.A[int64_t(d) * G + s];
    const float D = p.D[d];
    const float dt_bias = p.dt_bias[d];
    const int8_t* u_ptr = p.u + int64_t(b) * p.u_batch_stride + d;
    const int8_t* dt_ptr = p.dt + int64_t(b) * p.dt_batch_stride + d;
    const int8_t* z_ptr = p.z + int64_t(b) * p.z_batch_stride + d;
    const int8_t* B_ptr = p.B + int64_t(b) * p.B_batch_stride + s;
    const int8_t* C_ptr = p.C + int64_t(b) * p.C_batch_stride + s;
    float* y_ptr = p.y + int64_t(b) * p.seqlen * p.dim + d;

    // Decode with dt_proj here (seqlen 1): lane s sums ranks s, s + G, ... of the exact dot product, the group's xor
    // tree completes it in every lane, and lane 0 writes the code (the GEMV's epilogue, without bias).
    int dt_code = 0;
    if (p.dt_weight != nullptr) {
        const int8_t* dt_r = p.dt_r + int64_t(b) * p.dt_r_batch_stride;
        const int8_t* w = p.dt_weight + int64_t(d) * p.dt_rank;
        int acc = 0;
        for (int r = s; r < p.dt_rank; r += G) acc += int(dt_r[r]) * int(w[r]);
#pragma unroll
        for (int off = G / 2; off > 0; off /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, off, G);
        dt_code = quantize_rn(__fmul_rn(static_cast<float>(acc), __fmul_rn(p.dt_r_scale, p.dt_weight_scale)),
                              p.dt_scale);
        if (s == 0 && valid) p.dt_out[int64_t(b) * p.dim + d] = static_cast<int8_t>(dt_code);
    }

    for (int t0 = 0; t0 < p.seqlen; t0 += G) {
        const int steps = min(G, p.seqlen - t0);
        // Lane s: the per-channel scalars of timestep t0 + s.
        float delta = 0.0f, du = 0.0f, Du = 0.0f, gate = 0.0f;
        if (s < steps) {
            const int64_t t = t0 + s;
            const float u = __fmul_rn(static_cast<float>(read_code(u_ptr[t * p.u_seq_stride])), p.u_scale);
            const int dt_q = p.dt_weight != nullptr ? dt_code : read_code(dt_ptr[t * p.dt_seq_stride]);
            const float dt_value = __fmul_rn(static_cast<float>(dt_q), p.dt_scale);
            const float dt = __fadd_rn(dt_value, dt_bias);
            delta = softplus_rn(dt);
            du = __fmul_rn(delta, u);
            Du = __fmul_rn(D, u);
            gate = silu_rn(__fmul_rn(static_cast<float>(read_code(z_ptr[t * p.z_seq_stride])), p.z_scale));
        }
        // Step j of the chunk: h advances, returns lane s's term h[s] * C[t0 + j, s] of y[t0 + j].
        const auto advance = [&](int j) {
            const int64_t t = t0 + j;
            const float delta_t = __shfl_sync(0xffffffffu, delta, j, G);
            const float du_t = __shfl_sync(0xffffffffu, du, j, G);
            const float Bv = __fmul_rn(static_cast<float>(read_code(B_ptr[t * p.B_seq_stride])), p.B_scale);
            const float Cv = __fmul_rn(static_cast<float>(read_code(C_ptr[t * p.C_seq_stride])), p.C_scale);
            const float dA = expf(__fmul_rn(delta_t, a));
            h = __fadd_rn(__fmul_rn(dA, h), __fmul_rn(du_t, Bv));
            return __fmul_rn(h, Cv);
        };
        if (steps == G) {
            float terms[G];
#pragma unroll
            for (int j = 0; j < G; ++j) terms[j] = advance(j);
            const float y = transpose_sum<G>(terms, s);  // step t0 + s: this lane's Du and gate
            if (valid) y_ptr[(t0 + s) * int64_t(p.dim)] = __fmul_rn(__fadd_rn(y, Du), gate);
        } else {
            for (int j = 0; j < steps; ++j) {
                const float y = tree_sum<G>(advance(j));
                const float Du_t = __shfl_sync(0xffffffffu, Du, j, G);
                const float gate_t = __shfl_sync(0xffffffffu, gate, j, G);
                if (s == 0 && valid) y_ptr[(t0 + j) * int64_t(p.dim)] = __fmul_rn(__fadd_rn(y, Du_t), gate_t);
            }
        }
    }
    if (valid) p.ssm_state_out[state_idx] = h;
}

// The float16 variant (selective_scan_f16): the same lanes and chunking, the reference's float scan without the gate.
template <int G>
__global__ void __launch_bounds__(kThreads) selective_scan_f16_kernel(SelectiveScanF16Params p) {
    const int s = threadIdx.x % G;
    const int d_raw = blockIdx.x * (kThreads / G) + threadIdx.x / G;
    const bool valid = d_raw < p.dim;
    const int d = valid ? d_raw : p.dim - 1;  // lanes past dim compute a copy and store nothing (shuffles need them)
    const int b = blockIdx.y;

    const int64_t state_idx = (int64_t(b) * p.dim + d) * G + s;
    float h = p.ssm_state_in[state_idx];
    const float a = p.A[int64_t(d) * G + s];
    const float D = __half2float(p.D[d]);
    const __half* u_ptr = p.u + int64_t(b) * p.u_batch_stride + d;
    const float* delta_ptr = p.delta + int64_t(b) * p.delta_batch_stride + d;
    const __half* B_ptr = p.B + int64_t(b) * p.B_batch_stride + s;
    const __half* C_ptr = p.C + int64_t(b) * p.C_batch_stride + s;
    float* y_ptr = p.y + int64_t(b) * p.seqlen * p.dim + d;

    for (int t0 = 0; t0 < p.seqlen; t0 += G) {
        const int steps = min(G, p.seqlen - t0);
        float delta = 0.0f, du = 0.0f, Du = 0.0f;  // lane s: timestep t0 + s
        if (s < steps) {
            const int64_t t = t0 + s;
            const float u = __half2float(u_ptr[t * p.u_seq_stride]);
            delta = delta_ptr[t * p.delta_seq_stride];
            du = __fmul_rn(delta, u);
            Du = __fmul_rn(u, D);
        }
        const auto advance = [&](int j) {  // as in selective_scan_kernel
            const int64_t t = t0 + j;
            const float delta_t = __shfl_sync(0xffffffffu, delta, j, G);
            const float du_t = __shfl_sync(0xffffffffu, du, j, G);
            const float Bv = __half2float(B_ptr[t * p.B_seq_stride]);
            const float Cv = __half2float(C_ptr[t * p.C_seq_stride]);
            const float dA = expf(__fmul_rn(delta_t, a));
            h = __fadd_rn(__fmul_rn(h, dA), __fmul_rn(du_t, Bv));
            return __fmul_rn(h, Cv);
        };
        if (steps == G) {
            float terms[G];
#pragma unroll
            for (int j = 0; j < G; ++j) terms[j] = advance(j);
            const float y = transpose_sum<G>(terms, s);
            if (valid) y_ptr[(t0 + s) * int64_t(p.dim)] = __fadd_rn(y, Du);
        } else {
            for (int j = 0; j < steps; ++j) {
                const float y = tree_sum<G>(advance(j));
                const float Du_t = __shfl_sync(0xffffffffu, Du, j, G);
                if (s == 0 && valid) y_ptr[(t0 + j) * int64_t(p.dim)] = __fadd_rn(y, Du_t);
            }
        }
    }
    if (valid) p.ssm_state_out[state_idx] = h;
}

}  // namespace

cudaError_t launch_int8_selective_scan(const SelectiveScanParams& p, cudaStream_t stream) {
    const bool pow2 = p.dstate > 0 && p.dstate <= 32 && (p.dstate & (p.dstate - 1)) == 0;
    if (p.batch < 0 || p.seqlen < 0 || p.dim < 0 || !pow2 || p.batch > 65535) return cudaErrorInvalidValue;
    if (p.batch == 0 || p.dim == 0) return cudaSuccess;
    const bool dt_here = p.dt_weight != nullptr;  // dt_proj in this kernel: decode only
    if (p.ssm_state_in == nullptr || p.ssm_state_out == nullptr || p.A == nullptr || p.D == nullptr ||
        p.dt_bias == nullptr ||
        (p.seqlen > 0 && (p.u == nullptr || (!dt_here && p.dt == nullptr) || p.z == nullptr || p.B == nullptr ||
                          p.C == nullptr || p.y == nullptr)) ||
        (dt_here && (p.seqlen != 1 || p.dt_r == nullptr || p.dt_out == nullptr || p.dt_rank < 1 ||
                     !(p.dt_r_scale > 0.0f) || !std::isfinite(p.dt_r_scale) || !(p.dt_weight_scale > 0.0f) ||
                     !std::isfinite(p.dt_weight_scale)))) {
        return cudaErrorInvalidValue;
    }
    const int channels_per_block = kThreads / p.dstate;
    const dim3 grid((p.dim + channels_per_block - 1) / channels_per_block, p.batch);
    switch (p.dstate) {
        case 1: return launch_kernel(selective_scan_kernel<1>, grid, kThreads, 0, stream, p);
        case 2: return launch_kernel(selective_scan_kernel<2>, grid, kThreads, 0, stream, p);
        case 4: return launch_kernel(selective_scan_kernel<4>, grid, kThreads, 0, stream, p);
        case 8: return launch_kernel(selective_scan_kernel<8>, grid, kThreads, 0, stream, p);
        case 16: return launch_kernel(selective_scan_kernel<16>, grid, kThreads, 0, stream, p);
        default: return launch_kernel(selective_scan_kernel<32>, grid, kThreads, 0, stream, p);
    }
}

cudaError_t launch_selective_scan_f16(const SelectiveScanF16Params& p, cudaStream_t stream) {
    const bool pow2 = p.dstate > 0 && p.dstate <= 32 && (p.dstate & (p.dstate - 1)) == 0;
    if (p.batch < 0 || p.seqlen < 0 || p.dim < 0 || !pow2 || p.batch > 65535) return cudaErrorInvalidValue;
    if (p.batch == 0 || p.dim == 0) return cudaSuccess;
    if (p.ssm_state_in == nullptr || p.ssm_state_out == nullptr || p.A == nullptr || p.D == nullptr ||
        (p.seqlen > 0 && (p.u == nullptr || p.delta == nullptr || p.B == nullptr || p.C == nullptr ||
                          p.y == nullptr))) {
        return cudaErrorInvalidValue;
    }
    const int channels_per_block = kThreads / p.dstate;
    const dim3 grid((p.dim + channels_per_block - 1) / channels_per_block, p.batch);
    switch (p.dstate) {
        case 1: selective_scan_f16_kernel<1><<<grid, kThreads, 0, stream>>>(p); break;
        case 2: selective_scan_f16_kernel<2><<<grid, kThreads, 0, stream>>>(p); break;
        case 4: selective_scan_f16_kernel<4><<<grid, kThreads, 0, stream>>>(p); break;
        case 8: selective_scan_f16_kernel<8><<<grid, kThreads, 0, stream>>>(p); break;
        case 16: selective_scan_f16_kernel<16><<<grid, kThreads, 0, stream>>>(p); break;
        default: selective_scan_f16_kernel<32><<<grid, kThreads, 0, stream>>>(p); break;
    }
    return cudaGetLastError();
}

}  // namespace kernels
}  // namespace edge_quamba
