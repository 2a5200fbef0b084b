// The library's entry points for TensorRT: IPluginRegistry::loadLibrary (trtexec --dynamicPlugins, the Python
// builder's get_plugin_registry().load_library) looks up `getCreators` and, when present, `setLoggerFinder`.
// Neither needs libnvinfer: the library never links it.
#include "HadamardQuantizePlugin/hadamardQuantizePlugin.h"
#include "Int8CausalConv1dPlugin/int8CausalConv1dPlugin.h"
#include "Int8SelectiveScanPlugin/int8SelectiveScanPlugin.h"

#define EDGE_QUAMBA_EXPORT __attribute__((visibility("default")))

extern "C" EDGE_QUAMBA_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    static edge_quamba::trt::Int8CausalConv1dPluginCreator sConv;
    static edge_quamba::trt::Int8SelectiveScanPluginCreator sScan;
    static edge_quamba::trt::HadamardQuantizePluginCreator sHadamard;
    static nvinfer1::IPluginCreatorInterface* const kCREATORS[] = {&sConv, &sScan, &sHadamard};
    nbCreators = static_cast<int32_t>(sizeof(kCREATORS) / sizeof(kCREATORS[0]));
    return kCREATORS;
}

extern "C" EDGE_QUAMBA_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    edge_quamba::trt::setLoggerFinder(finder);
}
