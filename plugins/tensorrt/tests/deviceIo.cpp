// TEST ONLY: device memory and CUDA calls of `harness run` (deviceIo.h).
#include "deviceIo.h"

namespace edge_quamba
{
namespace trt
{
namespace test
{
using namespace nvinfer1;

unsigned char poisonByte(DataType t)
{
    return t == DataType::kINT8 ? 0x80 : 0xFF; // int8 -128 (never written by a plugin); float32 NaN
}

size_t bytesOf(PluginTensorDesc const& d)
{
    return static_cast<size_t>(volume(d.dims)) * elementSize(d.type);
}

void poison(Bindings const& b, std::vector<PluginTensorDesc> const& outDescs, cudaStream_t stream)
{
    for (size_t o = 0; o < b.out.size(); ++o)
    {
        if (!b.outIsInput[o])
        {
            CUDA_CHECK(cudaMemsetAsync(b.out[o], poisonByte(outDescs[o].type), b.outCapacity[o], stream));
        }
    }
}

void saveOutputs(Bindings const& b, std::vector<PluginTensorDesc> const& outDescs, Step const& step,
    std::string const& suffix, std::string const& what)
{
    for (size_t o = 0; o < b.out.size(); ++o)
    {
        size_t const used = bytesOf(outDescs[o]);
        size_t const total = b.outIsInput[o] ? used : b.outCapacity[o];
        std::vector<unsigned char> host(total);
        CUDA_CHECK(cudaMemcpy(host.data(), b.out[o], total, cudaMemcpyDeviceToHost));
        unsigned char const p = poisonByte(outDescs[o].type);
        check(std::all_of(host.begin() + static_cast<std::ptrdiff_t>(used), host.end(),
                  [p](unsigned char v) { return v == p; }),
            step.dir + ": " + what + ": nothing written past " + step.outputs[o].name + "'s shape");
        writeFile(step.dir + "/" + step.outputs[o].file + suffix, host.data(), used);
    }
}

void loadInputs(
    Step const& step, std::vector<void*> const& buffers, std::vector<bool> const& skip, cudaStream_t stream)
{
    for (size_t i = 0; i < step.inputs.size(); ++i)
    {
        if (skip[i])
        {
            continue;
        }
        size_t const bytes = static_cast<size_t>(volume(step.inputs[i].dims)) * elementSize(step.inputs[i].type);
        std::vector<char> host = readFile(step.dir + "/" + step.inputs[i].file, bytes);
        CUDA_CHECK(cudaMemcpyAsync(buffers[i], host.data(), bytes, cudaMemcpyHostToDevice, stream));
        CUDA_CHECK(cudaStreamSynchronize(stream)); // the pageable host copy dies here
    }
}

void enqueueOrDie(IPluginV3OneRuntime* runtime, Descs const& descs, Bindings const& b, void* workspace,
    cudaStream_t stream, std::string const& what)
{
    if (runtime->enqueue(descs.first.data(), descs.second.data(), b.in.data(), b.out.data(), workspace, stream) != 0)
    {
        fatal(what + ": enqueue failed");
    }
}

cudaGraphExec_t captureGraph(IPluginV3OneRuntime* runtime, Descs const& descs, Bindings const& b, void* workspace,
    cudaStream_t stream, std::string const& what)
{
    CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    int32_t const rc
        = runtime->enqueue(descs.first.data(), descs.second.data(), b.in.data(), b.out.data(), workspace, stream);
    cudaGraph_t graph = nullptr;
    cudaError_t const ended = cudaStreamEndCapture(stream, &graph);
    if (rc != 0 || ended != cudaSuccess || graph == nullptr)
    {
        fatal(what + ": enqueue could not be captured in a CUDA graph (enqueue returned " + std::to_string(rc)
            + ", cudaStreamEndCapture: " + cudaGetErrorString(ended) + ")");
    }
    size_t nodes = 0;
    CUDA_CHECK(cudaGraphGetNodes(graph, nullptr, &nodes));
    check(nodes >= 1, what + ": the captured graph holds the plugin's work");
    cudaGraphExec_t exec = nullptr;
    CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    CUDA_CHECK(cudaGraphDestroy(graph));
    return exec;
}

} // namespace test
} // namespace trt
} // namespace edge_quamba
