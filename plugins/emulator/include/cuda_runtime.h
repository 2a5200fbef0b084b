// The CUDA runtime as the kernel emulator sees it (plugins/emulator/README.md): this header replaces <cuda_runtime.h>
// when plugins/kernels/*.cu are compiled as C++ for the CPU. Every CUDA thread of a block is a ucontext fiber on one
// OS thread; blocks run one after another; __syncthreads and the warp collectives are cooperative barriers (a thread
// that waits yields to the next). `__shared__` becomes `static`, so a kernel's static shared variables are shared by
// the fibers of the running block. Dynamic shared memory is a heap buffer of exactly the launch's size filled with
// 0xFF bytes (NaN floats): AddressSanitizer sees overruns and unwritten reads show as NaN. A shuffle that reads a lane
// outside its mask returns NaN bits; a barrier some threads never reach, a lane shuffling outside its own mask, a
// mask naming lanes that do not exist, and shared memory above 48 KB without the opt-in abort with a message.
// Floats: the __f*_rn intrinsics are the CPU's IEEE operations (build with -ffp-contract=off); expf / log1pf / exp
// are the host libm's, not CUDA's (last-bit differences).
#pragma once
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __constant__ static
#define __restrict__

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct float4 { float x, y, z, w; };
struct float2 { float x, y; };
struct char4 { signed char x, y, z, w; };
struct int4 { int x, y, z, w; };
struct int2 { int x, y; };
struct uint2 { unsigned x, y; };
struct uint4 { unsigned x, y, z, w; };
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
inline char4 make_char4(signed char a, signed char b, signed char c, signed char d) { return {a, b, c, d}; }

typedef int cudaError_t;
enum : int { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorNotSupported = 801 };
typedef void* cudaStream_t;
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

using std::max;
using std::min;

inline dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace emu {
inline cudaError_t last_error = cudaSuccess;
inline size_t smem_optin = 0;  // the largest dynamic size a cudaFuncSetAttribute allowed (any kernel: coarse)

struct Fiber {
    ucontext_t ctx;
    char* stack;
    bool done;
    dim3 tid;
};
inline std::vector<Fiber>* fibers = nullptr;
inline int current = 0;
inline ucontext_t scheduler;
inline std::function<void()>* body = nullptr;
inline char* dyn_smem_ptr = nullptr;
inline long barrier_gen = 0;
inline int barrier_count = 0;
inline int block_threads = 0;
struct Warp {
    uint64_t vals[32];
    int arrived = 0;
    long gen = 0;
};
inline std::vector<Warp> warps;

[[noreturn]] inline void fail(const char* what) {
    std::fprintf(stderr, "EMU ERROR: %s (block %u,%u,%u thread %u)\n", what, blockIdx.x, blockIdx.y, blockIdx.z,
                 threadIdx.x);
    std::abort();
}

inline void yield() { swapcontext(&(*fibers)[current].ctx, &scheduler); }

inline void trampoline() {
    (*body)();
    (*fibers)[current].done = true;
    swapcontext(&(*fibers)[current].ctx, &scheduler);
}

inline int linear_tid() { return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z); }

inline void run_block(size_t smem, std::function<void()>& f) {
    const int n = blockDim.x * blockDim.y * blockDim.z;
    std::vector<Fiber> fs(n);
    fibers = &fs;
    body = &f;
    dyn_smem_ptr = smem ? new char[smem] : nullptr;
    if (smem) std::memset(dyn_smem_ptr, 0xFF, smem);
    barrier_gen = 0;
    barrier_count = 0;
    block_threads = n;
    warps.assign((n + 31) / 32, Warp{});
    constexpr size_t kStack = 512 * 1024;
    for (int i = 0; i < n; ++i) {
        fs[i].done = false;
        fs[i].tid = dim3(i % blockDim.x, (i / blockDim.x) % blockDim.y, i / (blockDim.x * blockDim.y));
        fs[i].stack = static_cast<char*>(std::malloc(kStack));
        getcontext(&fs[i].ctx);
        fs[i].ctx.uc_stack.ss_sp = fs[i].stack;
        fs[i].ctx.uc_stack.ss_size = kStack;
        fs[i].ctx.uc_link = &scheduler;
        makecontext(&fs[i].ctx, trampoline, 0);
    }
    int remaining = n;
    long stalled_passes = 0;
    while (remaining > 0) {
        const long gen_before = barrier_gen;
        long warp_gen_before = 0;
        for (auto& w : warps) warp_gen_before += w.gen;
        int finished_now = 0;
        for (int i = 0; i < n; ++i) {
            if (fs[i].done) continue;
            current = i;
            threadIdx = fs[i].tid;
            swapcontext(&scheduler, &fs[i].ctx);
            if (fs[i].done) ++finished_now;
        }
        remaining -= finished_now;
        long warp_gen_after = 0;
        for (auto& w : warps) warp_gen_after += w.gen;
        if (finished_now == 0 && barrier_gen == gen_before && warp_gen_after == warp_gen_before) {
            if (++stalled_passes > 2) fail("deadlock: threads wait at a barrier that others never reach");
        } else {
            stalled_passes = 0;
        }
    }
    for (auto& fb : fs) std::free(fb.stack);
    delete[] dyn_smem_ptr;
    dyn_smem_ptr = nullptr;
    fibers = nullptr;
}

template <class F>
void launch(dim3 grid, dim3 block, size_t smem, cudaStream_t, F kernel) {
    const unsigned n = block.x * block.y * block.z;
    if (n == 0 || n > 1024 || grid.y > 65535 || grid.z > 65535 || grid.x == 0 || grid.y == 0 || grid.z == 0) {
        last_error = cudaErrorInvalidValue;
        return;
    }
    if (smem > 48 * 1024 && smem > smem_optin) fail("dynamic shared memory above 48 KB without the opt-in");
    if (smem > 227 * 1024) fail("dynamic shared memory above sm_90's 227 KB");
    std::function<void()> f = kernel;
    gridDim = grid;
    blockDim = block;
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x) {
                blockIdx = dim3(x, y, z);
                run_block(smem, f);
            }
}

inline void* dyn_smem() { return dyn_smem_ptr; }

inline void warp_barrier(Warp& w, int count) {
    const long g = w.gen;
    if (++w.arrived == count) {
        w.arrived = 0;
        ++w.gen;
    } else {
        while (w.gen == g) yield();
    }
}

template <class T>
T exchange(unsigned mask, T v, int src) {
    static_assert(sizeof(T) <= 8);
    const int t = linear_tid(), lane = t & 31;
    if (!((mask >> lane) & 1u)) fail("shuffle by a lane outside its mask");
    const int warp_lanes = std::min(block_threads - (t & ~31), 32);
    if (warp_lanes < 32 && (mask >> warp_lanes) != 0) fail("shuffle mask names lanes that do not exist");
    Warp& w = warps[t >> 5];
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    w.vals[lane] = bits;
    const int count = __builtin_popcount(mask);
    warp_barrier(w, count);
    T r;
    if ((mask >> src) & 1u) {
        std::memcpy(&r, &w.vals[src], sizeof(T));
    } else {
        uint64_t junk = 0xFFFFFFFFFFFFFFFFull;  // NaN for float: a read of a lane outside the mask
        std::memcpy(&r, &junk, sizeof(T));
    }
    warp_barrier(w, count);
    return r;
}
}  // namespace emu

inline void __syncthreads() {
    const long g = emu::barrier_gen;
    if (++emu::barrier_count == emu::block_threads) {
        emu::barrier_count = 0;
        ++emu::barrier_gen;
    } else {
        while (emu::barrier_gen == g) emu::yield();
    }
}

template <class T>
T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    const int lane = emu::linear_tid() & 31;
    return emu::exchange(mask, v, (lane & ~(width - 1)) + (src & (width - 1)));
}
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    const int lane = emu::linear_tid() & 31;
    int src = lane ^ lane_mask;
    if (src >= (lane & ~(width - 1)) + width) src = lane;
    return emu::exchange(mask, v, src);
}
template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    const int lane = emu::linear_tid() & 31;
    const int src = (lane & (width - 1)) + int(delta) >= width ? lane : lane + int(delta);
    return emu::exchange(mask, v, src);
}
inline unsigned __reduce_max_sync(unsigned mask, unsigned v) {
    unsigned m = v;
    for (int i = 0; i < 32; ++i) {
        if ((mask >> i) & 1u) m = std::max(m, emu::exchange(mask, v, i));
    }
    return m;
}

inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline int __float2int_rn(float x) { return static_cast<int>(std::nearbyint(x)); }
inline float __expf(float x) { return std::exp(x); }
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline int __dp4a(int a, int b, int c) {
    for (int i = 0; i < 4; ++i) c += int(static_cast<int8_t>(a >> (8 * i))) * int(static_cast<int8_t>(b >> (8 * i)));
    return c;
}
inline unsigned atomicMax(unsigned* p, unsigned v) { const unsigned old = *p; *p = std::max(old, v); return old; }
// Fibers switch only at barriers and warp collectives, so a plain read-modify-write is atomic here.
inline int atomicAdd(int* p, int v) { const int old = *p; *p = old + v; return old; }
inline float __int2float_rn(int x) { return static_cast<float>(x); }  // round to nearest, as the host's default mode
inline int __ffs(int x) { return __builtin_ffs(x); }
// Byte i of the result is byte (s >> 4i) & 7 of the 8 bytes y:x (x the low four), PTX prmt's default mode.
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
    const unsigned long long v = (static_cast<unsigned long long>(y) << 32) | x;
    unsigned r = 0;
    for (int i = 0; i < 4; ++i) r |= static_cast<unsigned>((v >> (8 * ((s >> (4 * i)) & 7))) & 0xFFu) << (8 * i);
    return r;
}
template <class T> T __ldg(const T* p) { return *p; }
template <class T> T __ldcs(const T* p) { return *p; }

template <class K>
cudaError_t cudaFuncSetAttribute(K, cudaFuncAttribute, int value) {
    emu::smem_optin = std::max(emu::smem_optin, static_cast<size_t>(value));
    return cudaSuccess;
}
// cudaLaunchKernelEx and its config: the launch attributes (programmatic dependent launch) change nothing here,
// where kernels run one after another; the device calls that pair with them are no-ops without __CUDA_ARCH__.
enum cudaLaunchAttributeID { cudaLaunchAttributeProgrammaticStreamSerialization = 5 };
struct cudaLaunchAttributeValue { int programmaticStreamSerializationAllowed; };
struct cudaLaunchAttribute { cudaLaunchAttributeID id; cudaLaunchAttributeValue val; };
struct cudaLaunchConfig_t {
    dim3 gridDim, blockDim;
    size_t dynamicSmemBytes;
    cudaStream_t stream;
    cudaLaunchAttribute* attrs;
    unsigned numAttrs;
};
template <class... P, class... A>
cudaError_t cudaLaunchKernelEx(const cudaLaunchConfig_t* c, void (*kernel)(P...), A... args) {
    emu::launch(c->gridDim, c->blockDim, c->dynamicSmemBytes, c->stream, [=]() { kernel(args...); });
    const cudaError_t e = emu::last_error;
    emu::last_error = cudaSuccess;
    return e;
}
inline cudaError_t cudaGetLastError() { const cudaError_t e = emu::last_error; emu::last_error = cudaSuccess; return e; }
inline const char* cudaGetErrorString(cudaError_t e) {
    return e == cudaSuccess ? "no error"
         : e == cudaErrorNotSupported ? "not emulated (the kernel uses inline PTX)" : "emulated launch error";
}
