// The library's entry points for TensorRT: IPluginRegistry::loadLibrary (trtexec --dynamicPlugins, the Python
// builder's get_plugin_registry().load_library) looks up `getCreators` and, when present, `setLoggerFinder`.
// Neither needs libnvinfer: the library never links it.
#include "GatedRMSNormQuantizePlugin/gatedRMSNormQuantizePlugin.h"
#include "HadamardQuantizePlugin/hadamardQuantizePlugin.h"
#include "Int4LinearPlugin/int4LinearPlugin.h"
#include "SelectiveScanF16Plugin/selectiveScanF16Plugin.h"
#include "Int8CausalConv1dChannelScalesPlugin/int8CausalConv1dChannelScalesPlugin.h"
#include "Int8CausalConv1dPlugin/int8CausalConv1dPlugin.h"
#include "Int8SSDScanPlugin/int8SSDScanPlugin.h"
#include "Int8SelectiveScanPlugin/int8SelectiveScanPlugin.h"

#define EDGE_QUAMBA_EXPORT __attribute__((visibility("default")))

extern "C" EDGE_QUAMBA_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    static edge_quamba::trt::Int8CausalConv1dPluginCreator sConv;
    static edge_quamba::trt::Int8SelectiveScanPluginCreator sScan;
    static edge_quamba::trt::HadamardQuantizePluginCreator sHadamard;
    static edge_quamba::trt::W4A8LinearPluginCreator sW4A8;
    static edge_quamba::trt::W4A8LinearQuantizePluginCreator sW4A8Quantize;
    static edge_quamba::trt::W4A16LinearPluginCreator sW4A16;
    static edge_quamba::trt::SelectiveScanF16PluginCreator sScanF16;
    static edge_quamba::trt::Int8CausalConv1dChannelScalesPluginCreator sConvChannels;
    static edge_quamba::trt::Int8SSDScanPluginCreator sSsd;
    static edge_quamba::trt::GatedRMSNormQuantizePluginCreator sGatedNorm;
    static edge_quamba::trt::GatedRMSNormHadamardQuantizePluginCreator sGatedNormHadamard;
    static nvinfer1::IPluginCreatorInterface* const kCREATORS[] = {&sConv, &sScan, &sHadamard, &sW4A8, &sW4A8Quantize,
        &sW4A16, &sScanF16, &sConvChannels, &sSsd, &sGatedNorm, &sGatedNormHadamard};
    nbCreators = static_cast<int32_t>(sizeof(kCREATORS) / sizeof(kCREATORS[0]));
    return kCREATORS;
}

extern "C" EDGE_QUAMBA_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    edge_quamba::trt::setLoggerFinder(finder);
}
