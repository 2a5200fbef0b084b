// hadamard_quantize; see hadamard_quantize.h for the contract and the fixed float order.
//
// Work split: one block of T = n / E threads per row of y; thread t holds the E consecutive elements
// t*E .. t*E + E - 1 of the row in registers (E a power of two: 8, or 16 when n > 8192; E = p when p < 8). Viewed as
// the (m, p) row-major matrix X, each X row is held by p / E consecutive threads, so the butterfly partner of an
// element (j, j + h) sits
//   * in the same thread for h < E             (register butterflies),
//   * in lane t ^ (h / E) of the same warp for E <= h < 32 E  (warp shuffles; p / E <= 32 lanes per row),
//   * in another warp for h >= 32 E, only when p > 32 E (m = 1 rows of n > 256 E / 8, and p = 512, 1024 at m > 1):
//     the row goes to shared memory and each thread takes columns (i, c + s * 32E), s = 0 .. p / (32E) - 1, whose
//     remaining stages are again register butterflies.
// Every element goes through the stages h = 1, 2, ..., p/2 in that order and every butterfly is the same rounded
// pair (a + b, a - b), so the result is the reference's bit for bit whatever thread computes it.
// H_m (m > 1): X goes to shared memory; a thread loads the m values X[0..m-1, j] of one column j into registers and
// computes Z[i, j] = sum_r H_m[i, r] X[r, j] in the order r = 0, 1, ..., m - 1 for the rows i of its group (sign
// flips: exact); then v = Z * c, c = float32(1/sqrt(n)), and q = quantize(v, out_scale) (int8 row contiguous).
// Shared memory: n float32 when m > 1 or p > 32 E, none otherwise; n <= 16384 (64 KB).
// COLUMN SPLIT (m > 1, static or gated, few rows: decode): the H_m phase is most of the work (m dependent adds and one
// IEEE division per output) and one block per row leaves all but one SM idle, so blockIdx.y splits the p columns j of
// a row into S aligned slices of 2^log_cols columns. Every block of a row redoes the load, the gated norm and the
// Sylvester stages of the whole row (the same operations, so the same X; registers, shuffles and L2-resident reads)
// and then forms and stores only the outputs Z[i, j] of its slice. With 2^log_cols <= T / m each thread owns one
// output (one chain of m adds). The per-token scale (DYNAMIC) needs the whole row's amax: one block per row there.
// DYNAMIC (per-token scale): the scaled values v = Z * c stay in registers (m = 1, p <= 32 E), go back into X
// (m = 1, p > 32 E: each column element is read and written by one thread) or into a second buffer of n float32 after
// X (m > 1: the threads of one column group still read X while others write), so shared memory is 2 n float32 there
// (<= 128 KB, within sm_87's and sm_90's opt-in limit); then amax = block max of |v| (__reduce_max_sync on the
// float bits, which order like the values for v >= 0, then one shared atomicMax per warp), s = max(amax, 1e-5) / 127,
// and each thread quantizes E consecutive values.
// GATED (op gated_rms_norm_hadamard_quantize, Mamba2's out_proj input): the E loaded values become Mamba2's gated
// RMSNorm before the first butterfly: g = y * silu(q_z * z_scale) (z: E consecutive codes); per thread, the sum of its
// E squares in order k = 0 .. E-1 when group_size % E == 0 (a thread's elements lie in one group), else the squares
// themselves, go to shared memory (n floats, the space X takes later); warp w sums the partials of groups w, w + W, ...
// (lane i adds partials i, i + 32, ... in order, then a shuffle-down tree), and lane 0 writes the group's
// r = 1 / sqrt(sum / group_size + eps) after the n floats; then v = weight * (g * r) and the transform goes on as
// in the static case (shared memory n + groups floats). The sum's order is the kernel's own, like rms_norm_quantize.
#include <cmath>

#include "hadamard_quantize.h"
#include "hadamard_tables.h"
#include "numerics.cuh"

namespace edge_quamba {
namespace kernels {
namespace {

constexpr int kMaxThreads = 1024;
constexpr int kMaxDim = 16384;
constexpr int64_t kSplitBlocks = 128;  // the column split stops once rows x slices would pass this (about one per SM)
constexpr int kMaxColumn = 32;  // longest cross-warp column p / (32 E): m = 1, n = 8192 (E 8) or 16384 (E 16)
constexpr float kAmaxFloor = 1e-5f;  // edge_quamba.quant.primitives.AMAX_FLOOR as float32
constexpr size_t kStaticSmem = sizeof(unsigned) * (28 + 1);  // the kernel's sign_mask (m <= 28) and amax_bits

template <int M> __device__ __forceinline__ int8_t h_entry(int i, int r);
template <> __device__ __forceinline__ int8_t h_entry<12>(int i, int r) { return kHadamard12[i * 12 + r]; }
template <> __device__ __forceinline__ int8_t h_entry<20>(int i, int r) { return kHadamard20[i * 20 + r]; }
template <> __device__ __forceinline__ int8_t h_entry<28>(int i, int r) { return kHadamard28[i * 28 + r]; }

__device__ __forceinline__ void butterfly(float& a, float& b) {
    const float s = __fadd_rn(a, b), d = __fsub_rn(a, b);
    a = s;
    b = d;
}

// Thread t's E registers into X[t*E .. t*E + E - 1] (16-byte stores when E % 4 == 0: fewer bank conflicts).
template <int E>
__device__ __forceinline__ void store_row(float* X, int t, const float (&v)[E]) {
    if constexpr (E % 4 == 0) {
#pragma unroll
        for (int k = 0; k < E; k += 4) {
            reinterpret_cast<float4*>(X + t * E)[k / 4] = make_float4(v[k], v[k + 1], v[k + 2], v[k + 3]);
        }
    } else {
#pragma unroll
        for (int k = 0; k < E; ++k) X[t * E + k] = v[k];
    }
}

// Per-token scale of a row from this thread's partial amax (>= 0): block max, then max(amax, floor) / 127 in
// float32 (primitives.per_token_scale). Every thread of the block must call it; amax_bits was zeroed by thread 0
// before (the first __syncthreads here publishes that); lane_mask: the lanes of this thread's warp that exist.
__device__ __forceinline__ float block_token_scale(float amax, unsigned* amax_bits, unsigned lane_mask) {
    const unsigned warp_max = __reduce_max_sync(lane_mask, __float_as_uint(amax));  // float order for amax >= 0
    __syncthreads();
    if ((threadIdx.x & 31) == 0) atomicMax(amax_bits, warp_max);
    __syncthreads();
    return __fdiv_rn(fmaxf(__uint_as_float(*amax_bits), kAmaxFloor), 127.0f);
}

// Codes of E consecutive scaled values v[0..E-1] at scale s into out[0..E-1] (char4 stores when E % 4 == 0).
template <int E>
__device__ __forceinline__ void store_codes(int8_t* out, const float (&v)[E], float s) {
    if constexpr (E % 4 == 0) {
#pragma unroll
        for (int k = 0; k < E; k += 4) {
            reinterpret_cast<char4*>(out)[k / 4] = make_char4(
                static_cast<signed char>(quantize_rn(v[k], s)), static_cast<signed char>(quantize_rn(v[k + 1], s)),
                static_cast<signed char>(quantize_rn(v[k + 2], s)), static_cast<signed char>(quantize_rn(v[k + 3], s)));
        }
    } else {
#pragma unroll
        for (int k = 0; k < E; ++k) out[k] = quantize_rn(v[k], s);
    }
}

// Gated RMSNorm of thread t's E consecutive values v (loaded from y) in place, see the file comment. S: n + groups
// floats of shared memory; every thread of the block must call it (two __syncthreads).
template <int E>
__device__ __forceinline__ void gated_rms_norm(float (&v)[E], const GatedRmsNormQuantizeParams& g, bool vec, int t,
                                               int T, int n, float* S) {
    const int8_t* z = g.z + int64_t(blockIdx.x) * g.z_row_stride + t * E;
    const float* w = g.weight + t * E;
    int zq[E];
    float wv[E];
    if constexpr (E % 4 == 0) {
        if (vec) {
#pragma unroll
            for (int k = 0; k < E; k += 4) {
                const char4 c4 = reinterpret_cast<const char4*>(z)[k / 4];
                const float4 w4 = __ldg(reinterpret_cast<const float4*>(w) + k / 4);
                zq[k] = c4.x; zq[k + 1] = c4.y; zq[k + 2] = c4.z; zq[k + 3] = c4.w;
                wv[k] = w4.x; wv[k + 1] = w4.y; wv[k + 2] = w4.z; wv[k + 3] = w4.w;
            }
        }
    }
    if (!(E % 4 == 0 && vec)) {
#pragma unroll
        for (int k = 0; k < E; ++k) {
            zq[k] = z[k];
            wv[k] = __ldg(w + k);
        }
    }
#pragma unroll
    for (int k = 0; k < E; ++k) {
        const float gate = silu_rn(__fmul_rn(static_cast<float>(read_code(static_cast<int8_t>(zq[k]))), g.z_scale));
        v[k] = __fmul_rn(v[k], gate);
    }
    const int gs = g.group_size;
    const bool per_thread = gs % E == 0;
    if (per_thread) {
        float sum = __fmul_rn(v[0], v[0]);
#pragma unroll
        for (int k = 1; k < E; ++k) sum = __fadd_rn(sum, __fmul_rn(v[k], v[k]));
        S[t] = sum;
    } else {
#pragma unroll
        for (int k = 0; k < E; ++k) S[t * E + k] = __fmul_rn(v[k], v[k]);
    }
    __syncthreads();
    float* inv_rms = S + n;
    const int count = per_thread ? gs / E : gs;  // partials per group
    const int warp = t >> 5, lane = t & 31, warps = (T + 31) >> 5, lanes = min(T - (warp << 5), 32);
    const unsigned mask = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1u;
    for (int gi = warp; gi < n / gs; gi += warps) {
        float sum = 0.0f;
        for (int i = lane; i < count; i += lanes) sum = __fadd_rn(sum, S[gi * count + i]);
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) {
            const float other = __shfl_down_sync(mask, sum, off);
            if (lane + off < lanes) sum = __fadd_rn(sum, other);
        }
        if (lane == 0) {
            const float mean = __fdiv_rn(sum, static_cast<float>(gs));
            inv_rms[gi] = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(mean, g.eps)));
        }
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < E; ++k) v[k] = __fmul_rn(wv[k], __fmul_rn(v[k], inv_rms[(t * E + k) / gs]));
}

enum class Mode { kStatic, kDynamic, kGated };

// M: the H_m factor (1, 12, 20, 28); E: elements per thread; log_p = log2(p), p = n / M; blockDim.x * E == n.
// log_cols: log2 of the columns of X whose H_m outputs this block forms (blockIdx.y: which slice; log_p: all).
// kDynamic: per-token scale (prm.y_scale); kGated: Mamba2's gated RMSNorm first (gate), see the file comment.
template <int M, int E, Mode MODE>
__global__ void __launch_bounds__(kMaxThreads) hadamard_quantize_kernel(HadamardQuantizeParams prm, int log_p,
                                                                       int log_cols, float c, bool vec_loads,
                                                                       GatedRmsNormQuantizeParams gate,
                                                                       bool gate_vec) {
    wait_for_producer();  // PDL (common.h): nothing read or written before the previous kernel is done
    constexpr bool DYNAMIC = MODE == Mode::kDynamic;
    extern __shared__ float4 smem[];  // declared float4: 16-byte aligned for store_row's float4 stores
    float* X = reinterpret_cast<float*>(smem);  // (M, p) row-major, when used
    __shared__ unsigned sign_mask[M > 1 ? M : 1];  // bit r of sign_mask[i]: H_m[i, r] = +1
    __shared__ unsigned amax_bits;  // DYNAMIC: the row's amax as float bits
    const int n = prm.dim, p = 1 << log_p, t = threadIdx.x, T = blockDim.x;
    if constexpr (DYNAMIC) {
        if (t == 0) amax_bits = 0u;
    }
    float amax = 0.0f;  // DYNAMIC: this thread's max |v|
    if constexpr (M > 1) {
        if (t < M) {  // read by phase 3, after at least one __syncthreads
            unsigned bits = 0;
#pragma unroll
            for (int r = 0; r < M; ++r) bits |= (h_entry<M>(t, r) > 0 ? 1u : 0u) << r;
            sign_mask[t] = bits;
        }
    }
    const float* y = prm.y + int64_t(blockIdx.x) * prm.y_row_stride + t * E;
    int8_t* out = prm.y_q + int64_t(blockIdx.x) * n;

    float v[E];
    if constexpr (E % 4 == 0) {
        if (vec_loads) {
#pragma unroll
            for (int k = 0; k < E / 4; ++k) {
                const float4 f = __ldcs(reinterpret_cast<const float4*>(y) + k);
                v[4 * k] = f.x; v[4 * k + 1] = f.y; v[4 * k + 2] = f.z; v[4 * k + 3] = f.w;
            }
        } else {
#pragma unroll
            for (int k = 0; k < E; ++k) v[k] = y[k];
        }
    } else {
#pragma unroll
        for (int k = 0; k < E; ++k) v[k] = y[k];
    }

    if constexpr (MODE == Mode::kGated) gated_rms_norm<E>(v, gate, gate_vec, t, T, n, X);

    // Stages h = 1 .. E/2: both elements of every pair are this thread's (j's bit h is bit h of k, t*E % 2h == 0).
#pragma unroll
    for (int h = 1; h < E; h <<= 1) {
#pragma unroll
        for (int k = 0; k < E; ++k) {
            if (!(k & h)) butterfly(v[k], v[k + h]);
        }
    }

    // Stages h = E .. min(p, 32E)/2: the partner is lane t ^ (h / E); the lower lane keeps a + b, the upper a - b.
    const int span = min(p / E, 32);  // lanes per X row inside a warp; all of them exist (T is a multiple)
    const int warp_lanes = min(T - (t & ~31), 32);
    const unsigned mask = warp_lanes == 32 ? 0xffffffffu : (1u << warp_lanes) - 1u;
    for (int o = 1; o < span; o <<= 1) {
        const bool upper = (t & o) != 0;
#pragma unroll
        for (int k = 0; k < E; ++k) {
            const float other = __shfl_xor_sync(mask, v[k], o);
            v[k] = upper ? __fsub_rn(other, v[k]) : __fadd_rn(v[k], other);
        }
    }

    const int seg = 32 * E;  // elements of an X row that one warp covers
    if (p > seg) {
        // Stages h = 32E .. p/2 across warps: column (i, cidx) = elements i*p + cidx + s*seg, s < S.
        store_row(X, t, v);
        __syncthreads();
        const int S = p / seg;
        for (int w = t; w < M * seg; w += T) {
            const int base = (w / seg) * p + (w % seg);
            float col[kMaxColumn];
#pragma unroll
            for (int s = 0; s < kMaxColumn; ++s) {
                if (s < S) col[s] = X[base + s * seg];
            }
#pragma unroll
            for (int hs = 1; hs < kMaxColumn; hs <<= 1) {  // stage h = hs * seg
                if (hs < S) {
#pragma unroll
                    for (int s = 0; s < kMaxColumn; ++s) {
                        if (!(s & hs) && s + hs < S) butterfly(col[s], col[s + hs]);
                    }
                }
            }
#pragma unroll
            for (int s = 0; s < kMaxColumn; ++s) {
                if (s < S) {
                    if constexpr (M == 1 && DYNAMIC) {
                        const float scaled = __fmul_rn(col[s], c);
                        X[base + s * seg] = scaled;
                        amax = fmaxf(amax, fabsf(scaled));
                    } else if constexpr (M == 1) {
                        out[base + s * seg] = quantize_rn(__fmul_rn(col[s], c), prm.out_scale);
                    } else {
                        X[base + s * seg] = col[s];
                    }
                }
            }
        }
        if constexpr (M == 1 && DYNAMIC) {
            const float s = block_token_scale(amax, &amax_bits, mask);  // its __syncthreads publish X too
            if (t == 0) prm.y_scale[blockIdx.x] = s;
            float scaled[E];
#pragma unroll
            for (int k = 0; k < E; ++k) scaled[k] = X[t * E + k];
            store_codes<E>(out + t * E, scaled, s);
            return;
        }
        if constexpr (M == 1) return;
        __syncthreads();
    } else if constexpr (M > 1) {
        store_row(X, t, v);
        __syncthreads();
    } else if constexpr (DYNAMIC) {
        // m = 1, the whole transform in registers: scale, the row's amax, quantize, store E consecutive codes.
#pragma unroll
        for (int k = 0; k < E; ++k) {
            v[k] = __fmul_rn(v[k], c);
            amax = fmaxf(amax, fabsf(v[k]));
        }
        const float s = block_token_scale(amax, &amax_bits, mask);
        if (t == 0) prm.y_scale[blockIdx.x] = s;
        store_codes<E>(out + t * E, v, s);
        return;
    } else {
        // m = 1 and the whole transform was in registers: scale, quantize, store E consecutive codes.
        if constexpr (E % 4 == 0) {
#pragma unroll
            for (int k = 0; k < E; k += 4) {
                const auto code = [&](int i) {
                    return static_cast<signed char>(quantize_rn(__fmul_rn(v[k + i], c), prm.out_scale));
                };
                reinterpret_cast<char4*>(out + t * E)[k / 4] = make_char4(code(0), code(1), code(2), code(3));
            }
        } else {
#pragma unroll
            for (int k = 0; k < E; ++k) out[t * E + k] = quantize_rn(__fmul_rn(v[k], c), prm.out_scale);
        }
        return;
    }

    if constexpr (M > 1) {
        // H_m over rows: item w = (group g, column j); the rows i = g, g + G, ... of column j, four at a time (four
        // independent sum chains in flight). The signs of H_m row i are the bits of sign_mask[i] (bit r set:
        // H_m[i, r] = +1); z + (-x) is z - x exactly, so each term is __fadd_rn(z, +-x) in the order r = 0 .. m-1.
        // Output Z[i, j] scaled, then quantized (static) or kept for the row's scale (DYNAMIC).
        const auto emit = [&](int i, int j, float z) {
            const float scaled = __fmul_rn(z, c);
            if constexpr (DYNAMIC) {
                X[n + (i << log_p) + j] = scaled;  // the second buffer: X is still being read
                amax = fmaxf(amax, fabsf(scaled));
            } else {
                out[(i << log_p) + j] = quantize_rn(scaled, prm.out_scale);
            }
        };
        // Columns j0 .. j0 + cols - 1 (the column split; all p when gridDim.y == 1).
        const int cols = 1 << log_cols, j0 = int(blockIdx.y) << log_cols;
        const int G = max(1, min(M, T >> log_cols));
        for (int w = t; w < cols * G; w += T) {
            const int j = j0 + (w & (cols - 1)), g = w >> log_cols;
            float xr[M];
#pragma unroll
            for (int r = 0; r < M; ++r) xr[r] = X[(r << log_p) + j];
            if (G == M) {  // one output a thread: a single chain (the four-chain form would form three unused ones)
                const unsigned signs = sign_mask[g];
                float z = (signs & 1u) ? xr[0] : -xr[0];
#pragma unroll
                for (int r = 1; r < M; ++r) z = __fadd_rn(z, ((signs >> r) & 1u) ? xr[r] : -xr[r]);
                emit(g, j, z);
                continue;
            }
            for (int i0 = g; i0 < M; i0 += 4 * G) {
                unsigned masks[4];
                float z[4];
#pragma unroll
                for (int u = 0; u < 4; ++u) {
                    masks[u] = sign_mask[min(i0 + u * G, M - 1)];
                    z[u] = (masks[u] & 1u) ? xr[0] : -xr[0];
                }
#pragma unroll
                for (int r = 1; r < M; ++r) {
#pragma unroll
                    for (int u = 0; u < 4; ++u) z[u] = __fadd_rn(z[u], ((masks[u] >> r) & 1u) ? xr[r] : -xr[r]);
                }
#pragma unroll
                for (int u = 0; u < 4; ++u) {
                    if (i0 + u * G < M) emit(i0 + u * G, j, z[u]);
                }
            }
        }
        if constexpr (DYNAMIC) {
            const float s = block_token_scale(amax, &amax_bits, mask);  // its __syncthreads publish the buffer too
            if (t == 0) prm.y_scale[blockIdx.x] = s;
            float scaled[E];
#pragma unroll
            for (int k = 0; k < E; ++k) scaled[k] = X[n + t * E + k];
            store_codes<E>(out + t * E, scaled, s);
        }
    }
}

template <int M, int E, Mode MODE>
cudaError_t launch_me(const HadamardQuantizeParams& prm, int log_p, const GatedRmsNormQuantizeParams& gate,
                      cudaStream_t stream) {
    constexpr bool DYNAMIC = MODE == Mode::kDynamic;
    const int p = 1 << log_p, threads = prm.dim / E;
    const float c = static_cast<float>(1.0 / std::sqrt(static_cast<double>(prm.dim)));  // rounded once
    const size_t buffers = (M > 1 && DYNAMIC) ? 2 : 1;  // X, and for DYNAMIC m > 1 the scaled values after it
    size_t smem = (M > 1 || p > 32 * E) ? buffers * sizeof(float) * prm.dim : 0;
    bool gate_vec = false;
    if constexpr (MODE == Mode::kGated) {  // the squares (n) in X's place, then one 1/rms per group
        smem = sizeof(float) * (size_t(prm.dim) + size_t(prm.dim / gate.group_size));
        gate_vec = reinterpret_cast<uintptr_t>(gate.z) % 4 == 0 && gate.z_row_stride % 4 == 0 &&
                   reinterpret_cast<uintptr_t>(gate.weight) % 16 == 0;
    }
    // Opt in above the 48 KB default, counting the kernel's static shared memory too (n = 12288 needs exactly 48 KB
    // dynamic: without the opt-in that launch failed with "invalid argument" on the H200).
    if (smem + kStaticSmem > 48 * 1024) {
        const cudaError_t err = cudaFuncSetAttribute(hadamard_quantize_kernel<M, E, MODE>,
                                                     cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
        if (err != cudaSuccess) return err;
    }
    // The column split (file comment): slices of 2^log_cols <= threads / m columns (one output a thread), as many as
    // bring the grid to about kSplitBlocks blocks; one slice (log_cols = log_p) for the per-token scale, for m = 1,
    // and for prefill, whose rows fill the GPU already.
    int log_cols = log_p;
    if constexpr (M > 1 && !DYNAMIC) {
        int log_min = 0;  // log2 of the narrowest slice: the largest power of two <= threads / m
        while (log_min < log_p && (2 << log_min) * M <= threads) ++log_min;
        while (log_cols > log_min && (prm.rows << (log_p - log_cols + 1)) <= kSplitBlocks) --log_cols;
    }
    const dim3 grid(static_cast<unsigned>(prm.rows), 1u << (log_p - log_cols));
    const bool vec_loads = prm.y_row_stride % 4 == 0 && reinterpret_cast<uintptr_t>(prm.y) % 16 == 0;
    return launch_kernel(hadamard_quantize_kernel<M, E, MODE>, grid, threads, smem, stream, prm, log_p, log_cols, c,
                         vec_loads, gate, gate_vec);
}

template <int M, int E>
cudaError_t launch_me(const HadamardQuantizeParams& prm, int log_p, const GatedRmsNormQuantizeParams* gate,
                      cudaStream_t stream) {
    if (gate != nullptr) return launch_me<M, E, Mode::kGated>(prm, log_p, *gate, stream);
    const GatedRmsNormQuantizeParams none{};
    return prm.y_scale != nullptr ? launch_me<M, E, Mode::kDynamic>(prm, log_p, none, stream)
                                  : launch_me<M, E, Mode::kStatic>(prm, log_p, none, stream);
}

template <int M>
cudaError_t launch_m(const HadamardQuantizeParams& prm, int p, const GatedRmsNormQuantizeParams* gate,
                     cudaStream_t stream) {
    int log_p = 0;
    while ((1 << log_p) < p) ++log_p;
    int e = 8;  // elements per thread: 8, more when n / 8 > 1024 threads, at most p
    while (prm.dim / e > kMaxThreads) e *= 2;
    switch (e < p ? e : p) {
        case 1: return launch_me<M, 1>(prm, log_p, gate, stream);
        case 2: return launch_me<M, 2>(prm, log_p, gate, stream);
        case 4: return launch_me<M, 4>(prm, log_p, gate, stream);
        case 8: return launch_me<M, 8>(prm, log_p, gate, stream);
        default: return launch_me<M, 16>(prm, log_p, gate, stream);
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

cudaError_t launch_m_any(const HadamardQuantizeParams& prm, const GatedRmsNormQuantizeParams* gate,
                         cudaStream_t stream) {
    int m, p;
    factor(prm.dim, &m, &p);
    switch (m) {
        case 1: return launch_m<1>(prm, p, gate, stream);
        case 12: return launch_m<12>(prm, p, gate, stream);
        case 20: return launch_m<20>(prm, p, gate, stream);
        default: return launch_m<28>(prm, p, gate, stream);
    }
}

}  // namespace

bool hadamard_dim_supported(int n) {
    int m, p;
    factor(n, &m, &p);
    return m > 0 && n <= kMaxDim;
}

cudaError_t launch_hadamard_quantize(const HadamardQuantizeParams& prm, cudaStream_t stream) {
    const bool static_scale_ok = prm.out_scale > 0.0f && std::isfinite(prm.out_scale);
    if (prm.rows < 0 || !hadamard_dim_supported(prm.dim) || prm.y_row_stride < prm.dim || prm.rows > 2147483647 ||
        (prm.y_scale == nullptr && !static_scale_ok)) {
        return cudaErrorInvalidValue;
    }
    if (prm.rows == 0) return cudaSuccess;
    if (prm.y == nullptr || prm.y_q == nullptr) return cudaErrorInvalidValue;
    return launch_m_any(prm, nullptr, stream);
}

cudaError_t launch_gated_rms_norm_hadamard_quantize(const GatedRmsNormQuantizeParams& g, cudaStream_t stream) {
    if (g.rows < 0 || !hadamard_dim_supported(g.dim) || g.group_size < 1 || g.dim % g.group_size != 0 ||
        g.y_row_stride < g.dim || g.z_row_stride < g.dim || g.rows > 2147483647 || !(g.eps >= 0.0f) ||
        !std::isfinite(g.eps) || !(g.z_scale > 0.0f) || !std::isfinite(g.z_scale) || !(g.out_scale > 0.0f) ||
        !std::isfinite(g.out_scale)) {
        return cudaErrorInvalidValue;
    }
    if (g.rows == 0) return cudaSuccess;
    if (g.y == nullptr || g.z == nullptr || g.weight == nullptr || g.y_q == nullptr) return cudaErrorInvalidValue;
    HadamardQuantizeParams prm{};
    prm.rows = g.rows;
    prm.dim = g.dim;
    prm.y_row_stride = g.y_row_stride;
    prm.y = g.y;
    prm.y_q = g.y_q;
    prm.out_scale = g.out_scale;
    return launch_m_any(prm, &g, stream);
}

}  // namespace kernels
}  // namespace edge_quamba
