// int8_ssd_scan; see ssd_scan.h for the contract and the float order.
//
// Work split: a block of 128 threads owns one (batch b, head hd) and R = 128 / NT consecutive channel rows i of that
// head; each row is NT adjacent lanes (NT a power of two <= 16, one warp holds 32 / NT rows), and lane j of a row
// keeps the SPL states s = j * SPL .. j * SPL + SPL - 1 of h[b, hd, i, :] in registers for the whole sequence
// (n_pad = NT * SPL = the next power of two >= n; states s >= n stay 0 and read B = C = 0). grid = (ceil(p / R), h, b).
// The sequence is walked in chunks of T tokens (T * n_pad <= 4096, so the staging fits ~35 KB of shared memory):
//   phase A, all threads: B[t, :] and C[t, :] of the head's group, dequantized once per block into shared memory
//     (the same n values serve every row), and per (token, row) dtx = Δ x and D x, and per token decay = expf(Δ A)
//     (Δ is recomputed by each (token, row) item: one softplus per item, cheaper than another barrier);
//   phase B, each row: per token, every lane updates its SPL states, h = h * decay + dtx * B[s] (two rounded products,
//     one rounded add: the reference's order), and accumulates its part of y = sum_s h C[s] as a chain of fused
//     multiply-adds (the reduction order is free); the row's NT parts meet in a shuffle tree and lane 0 adds D x and
//     writes y.
// Lanes of rows past p run on row p - 1 and store nothing (every lane of a warp takes part in the shuffles).
#include <algorithm>
#include <cmath>

#include "numerics.cuh"
#include "ssd_scan.h"

namespace edge_quamba {
namespace kernels {
namespace {

constexpr int kThreads = 128;
constexpr int kStageElems = 4096;  // T * n_pad: B and C of T tokens, 2 x 16 KB of shared memory
constexpr int kMaxChunk = 64;

template <int SPL, int NT>
__global__ void __launch_bounds__(kThreads) ssd_scan_kernel(SsdScanParams p, int chunk, bool vec_state) {
    wait_for_producer();  // PDL (common.h): nothing read or written before the previous kernel is done
    constexpr int kRows = kThreads / NT;
    constexpr int kPad = SPL * NT;  // n_pad
    extern __shared__ float4 smem4[];
    float* Bs = reinterpret_cast<float*>(smem4);  // (chunk, n_pad)
    float* Cs = Bs + chunk * kPad;                // (chunk, n_pad)
    float* dtx_s = Cs + chunk * kPad;             // (chunk, R)
    float* Dx_s = dtx_s + chunk * kRows;          // (chunk, R)
    float* decay_s = Dx_s + chunk * kRows;        // (chunk)

    const int tid = threadIdx.x, lane = tid % NT, r = tid / NT;
    const int hd = blockIdx.y, b = blockIdx.z;
    const int n = p.dstate, P = p.headdim, d_in = p.nheads * P;
    const int row0 = blockIdx.x * kRows;
    const bool valid = row0 + r < P;
    const int row = valid ? row0 + r : P - 1;
    const int group = hd / (p.nheads / p.ngroups);
    const float A = p.A[hd], D = p.D[hd], dt_bias = p.dt_bias[hd];

    const int8_t* xp = p.x + int64_t(b) * p.x_batch_stride + hd * P;
    const int8_t* dtp = p.dt + int64_t(b) * p.dt_batch_stride + hd;
    const int8_t* Bp = p.B + int64_t(b) * p.B_batch_stride + group * n;
    const int8_t* Cp = p.C + int64_t(b) * p.C_batch_stride + group * n;
    const float* B_scales = p.B_scales + group * n;
    const float* C_scales = p.C_scales + group * n;
    const float* x_scales = p.x_scales + hd * P;
    float* yp = p.y + int64_t(b) * p.seqlen * d_in + hd * P + row;

    const int64_t state_base = ((int64_t(b) * p.nheads + hd) * P + row) * n + lane * SPL;
    float h[SPL];
    if constexpr (SPL % 4 == 0) {
        if (vec_state) {
#pragma unroll
            for (int k = 0; k < SPL; k += 4) {
                const float4 v = *reinterpret_cast<const float4*>(p.ssm_state_in + state_base + k);
                h[k] = v.x; h[k + 1] = v.y; h[k + 2] = v.z; h[k + 3] = v.w;
            }
        }
    }
    if (!(SPL % 4 == 0 && vec_state)) {
#pragma unroll
        for (int k = 0; k < SPL; ++k) h[k] = lane * SPL + k < n ? p.ssm_state_in[state_base + k] : 0.0f;
    }

    for (int t0 = 0; t0 < p.seqlen; t0 += chunk) {
        const int steps = min(chunk, p.seqlen - t0);
        // Phase A: B, C of the group (zero past n), and the per-(token, row) scalars.
        for (int i = tid; i < steps * kPad; i += kThreads) {
            const int tt = i / kPad, s = i - tt * kPad;
            float bv = 0.0f, cv = 0.0f;
            if (s < n) {
                const int64_t t = t0 + tt;
                bv = __fmul_rn(static_cast<float>(read_code(Bp[t * p.B_seq_stride + s])), B_scales[s]);
                cv = __fmul_rn(static_cast<float>(read_code(Cp[t * p.C_seq_stride + s])), C_scales[s]);
            }
            Bs[i] = bv;
            Cs[i] = cv;
        }
        for (int i = tid; i < steps * kRows; i += kThreads) {
            const int tt = i / kRows, ri = i - tt * kRows;
            const int c = min(row0 + ri, P - 1);
            const int64_t t = t0 + tt;
            const float dt_value = __fmul_rn(static_cast<float>(read_code(dtp[t * p.dt_seq_stride])), p.dt_scale);
            const float delta = softplus_rn(__fadd_rn(dt_value, dt_bias));
            const float x = __fmul_rn(static_cast<float>(read_code(xp[t * p.x_seq_stride + c])), x_scales[c]);
            dtx_s[i] = __fmul_rn(delta, x);
            Dx_s[i] = __fmul_rn(D, x);
            if (ri == 0) decay_s[tt] = expf(__fmul_rn(delta, A));
        }
        __syncthreads();
        // Phase B: the recurrence, token by token.
        for (int tt = 0; tt < steps; ++tt) {
            const float decay = decay_s[tt], dtx = dtx_s[tt * kRows + r];
            const float* Bt = Bs + tt * kPad + lane * SPL;
            const float* Ct = Cs + tt * kPad + lane * SPL;
            float Bv[SPL], Cv[SPL];
            if constexpr (SPL % 4 == 0) {
#pragma unroll
                for (int k = 0; k < SPL; k += 4) {
                    const float4 bq = *reinterpret_cast<const float4*>(Bt + k);
                    const float4 cq = *reinterpret_cast<const float4*>(Ct + k);
                    Bv[k] = bq.x; Bv[k + 1] = bq.y; Bv[k + 2] = bq.z; Bv[k + 3] = bq.w;
                    Cv[k] = cq.x; Cv[k + 1] = cq.y; Cv[k + 2] = cq.z; Cv[k + 3] = cq.w;
                }
            } else {
#pragma unroll
                for (int k = 0; k < SPL; ++k) {
                    Bv[k] = Bt[k];
                    Cv[k] = Ct[k];
                }
            }
            float part = 0.0f;
#pragma unroll
            for (int k = 0; k < SPL; ++k) {
                h[k] = __fadd_rn(__fmul_rn(h[k], decay), __fmul_rn(dtx, Bv[k]));
                part = __fmaf_rn(h[k], Cv[k], part);
            }
#pragma unroll
            for (int off = NT / 2; off > 0; off /= 2) part = __fadd_rn(part, __shfl_xor_sync(0xffffffffu, part, off, NT));
            if (lane == 0 && valid) yp[int64_t(t0 + tt) * d_in] = __fadd_rn(part, Dx_s[tt * kRows + r]);
        }
        __syncthreads();  // the next chunk overwrites the staging
    }

    if (!valid) return;
    if constexpr (SPL % 4 == 0) {
        if (vec_state) {
#pragma unroll
            for (int k = 0; k < SPL; k += 4) {
                *reinterpret_cast<float4*>(p.ssm_state_out + state_base + k) = make_float4(h[k], h[k + 1], h[k + 2],
                                                                                           h[k + 3]);
            }
            return;
        }
    }
#pragma unroll
    for (int k = 0; k < SPL; ++k) {
        if (lane * SPL + k < n) p.ssm_state_out[state_base + k] = h[k];
    }
}

template <int SPL, int NT>
cudaError_t launch_spl(const SsdScanParams& p, cudaStream_t stream) {
    constexpr int kRows = kThreads / NT, kPad = SPL * NT;
    const int chunk = std::min({kMaxChunk, kStageElems / kPad, 2048 / kRows});
    const size_t smem = sizeof(float) * (size_t(2) * chunk * kPad + size_t(2) * chunk * kRows + chunk);
    const bool vec_state = p.dstate == kPad && reinterpret_cast<uintptr_t>(p.ssm_state_in) % 16 == 0 &&
                           reinterpret_cast<uintptr_t>(p.ssm_state_out) % 16 == 0;
    const dim3 grid((p.headdim + kRows - 1) / kRows, p.nheads, p.batch);
    return launch_kernel(ssd_scan_kernel<SPL, NT>, grid, kThreads, smem, stream, p, chunk, vec_state);
}

}  // namespace

cudaError_t launch_int8_ssd_scan(const SsdScanParams& p, cudaStream_t stream) {
    if (p.batch < 0 || p.seqlen < 0 || p.nheads < 0 || p.headdim < 0 || p.ngroups < 1 || p.dstate < 1 ||
        p.dstate > kSsdMaxState || p.batch > 65535 || p.nheads > 65535 || (p.nheads % p.ngroups) != 0 ||
        !(p.dt_scale > 0.0f) || !std::isfinite(p.dt_scale)) {
        return cudaErrorInvalidValue;
    }
    if (p.batch == 0 || p.nheads == 0 || p.headdim == 0) return cudaSuccess;
    if (p.ssm_state_in == nullptr || p.ssm_state_out == nullptr || p.A == nullptr || p.D == nullptr ||
        p.dt_bias == nullptr || p.x_scales == nullptr || p.B_scales == nullptr || p.C_scales == nullptr ||
        (p.seqlen > 0 && (p.x == nullptr || p.dt == nullptr || p.B == nullptr || p.C == nullptr || p.y == nullptr))) {
        return cudaErrorInvalidValue;
    }
    int pad = 1;
    while (pad < p.dstate) pad *= 2;
    switch (pad) {
        case 1: return launch_spl<1, 1>(p, stream);
        case 2: return launch_spl<1, 2>(p, stream);
        case 4: return launch_spl<1, 4>(p, stream);
        case 8: return launch_spl<1, 8>(p, stream);
        case 16: return launch_spl<1, 16>(p, stream);
        case 32: return launch_spl<2, 16>(p, stream);
        case 64: return launch_spl<4, 16>(p, stream);
        case 128: return launch_spl<8, 16>(p, stream);
        default: return launch_spl<16, 16>(p, stream);
    }
}

}  // namespace kernels
}  // namespace edge_quamba
