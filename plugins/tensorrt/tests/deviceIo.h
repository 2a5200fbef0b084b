// TEST ONLY: device memory and CUDA calls of `harness run` (trtOrder.cpp): buffers, bindings, the poison, reading and
// writing a step's tensors, timing, graph capture. Every CUDA error is fatal (the run cannot go on).
#pragma once

#include "caseFiles.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#define CUDA_CHECK(call)                                                                                               \
    do                                                                                                                 \
    {                                                                                                                 \
        cudaError_t const status_ = (call);                                                                            \
        if (status_ != cudaSuccess)                                                                                    \
            ::edge_quamba::trt::test::fatal(std::string(#call) + ": " + cudaGetErrorString(status_));                 \
    } while (0)

namespace edge_quamba
{
namespace trt
{
namespace test
{

//! A cudaMalloc'ed buffer (nothing in the dry run).
class Buffer
{
public:
    Buffer() = default;
    Buffer(size_t bytes, bool device)
        : mBytes(bytes)
    {
        if (device)
        {
            CUDA_CHECK(cudaMalloc(&mPtr, std::max<size_t>(bytes, 1)));
        }
    }
    Buffer(Buffer const&) = delete;
    Buffer& operator=(Buffer const&) = delete;
    Buffer(Buffer&& other) noexcept
        : mPtr(other.mPtr)
        , mBytes(other.mBytes)
    {
        other.mPtr = nullptr;
    }
    Buffer& operator=(Buffer&& other) noexcept
    {
        std::swap(mPtr, other.mPtr);
        std::swap(mBytes, other.mBytes);
        return *this;
    }
    ~Buffer()
    {
        if (mPtr != nullptr)
        {
            cudaFree(mPtr);
        }
    }
    void* get() const
    {
        return mPtr;
    }
    size_t bytes() const
    {
        return mBytes;
    }

private:
    void* mPtr = nullptr;
    size_t mBytes = 0;
};

//! One plugin call's bindings: input and output pointers (each into a buffer of ``capacity`` bytes).
struct Bindings
{
    std::vector<void const*> in;
    std::vector<void*> out;
    std::vector<size_t> outCapacity;
    std::vector<bool> outIsInput; // written in place: not poisoned (it holds the input), no tail check
};

//! The runtime descs of one call: inputs, outputs.
using Descs = std::pair<std::vector<nvinfer1::PluginTensorDesc>, std::vector<nvinfer1::PluginTensorDesc>>;

//! The byte every output buffer is filled with before a call: int8 -128 (never written by a plugin), float32 NaN.
unsigned char poisonByte(nvinfer1::DataType t);
size_t bytesOf(nvinfer1::PluginTensorDesc const& d);

//! Poisons every output buffer (whole), before an enqueue or a graph launch.
void poison(Bindings const& b, std::vector<nvinfer1::PluginTensorDesc> const& outDescs, cudaStream_t stream);

//! Reads every output after a synchronized call, checks that nothing past the step's shape was written, writes the
//! step's part to ``dir/file`` + ``suffix``.
void saveOutputs(Bindings const& b, std::vector<nvinfer1::PluginTensorDesc> const& outDescs, Step const& step,
    std::string const& suffix, std::string const& what);

//! Copies a step's inputs into the bound input buffers, except those in ``skip`` (states carried on the device).
void loadInputs(
    Step const& step, std::vector<void*> const& buffers, std::vector<bool> const& skip, cudaStream_t stream);

void enqueueOrDie(nvinfer1::IPluginV3OneRuntime* runtime, Descs const& descs, Bindings const& b, void* workspace,
    cudaStream_t stream, std::string const& what);

//! Captures one enqueue into a CUDA graph (cudaStreamCaptureModeGlobal) and instantiates it; fatal when the plugin's
//! enqueue cannot be captured.
cudaGraphExec_t captureGraph(nvinfer1::IPluginV3OneRuntime* runtime, Descs const& descs, Bindings const& b,
    void* workspace, cudaStream_t stream, std::string const& what);

//! Prints the current device's name and compute capability ("device NAME (sm_XY)").
inline void printDevice()
{
    cudaDeviceProp prop{};
    int id = 0;
    CUDA_CHECK(cudaGetDevice(&id));
    CUDA_CHECK(cudaGetDeviceProperties(&prop, id));
    std::printf("device %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
}

//! Median of 21 cudaEvent-timed calls of ``launch`` in microseconds (identical work: outputs feed no input).
template <class Launch>
double medianMicroseconds(cudaStream_t stream, Launch const& launch)
{
    cudaEvent_t start, stop;
    CUDA_CHECK(cudaEventCreate(&start));
    CUDA_CHECK(cudaEventCreate(&stop));
    std::vector<float> times;
    for (int rep = 0; rep < 21; ++rep)
    {
        CUDA_CHECK(cudaEventRecord(start, stream));
        launch();
        CUDA_CHECK(cudaEventRecord(stop, stream));
        CUDA_CHECK(cudaEventSynchronize(stop));
        float ms = 0.0F;
        CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
        times.push_back(ms);
    }
    CUDA_CHECK(cudaEventDestroy(start));
    CUDA_CHECK(cudaEventDestroy(stop));
    std::sort(times.begin(), times.end());
    return 1e3 * times[times.size() / 2];
}

} // namespace test
} // namespace trt
} // namespace edge_quamba
