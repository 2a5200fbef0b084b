#include "int8CausalConv1dPlugin.h"

namespace edge_quamba
{
namespace trt
{

bool checkConvSizes(char const* plugin, SymbolValues const& sym) noexcept
{
    int64_t const k = sym.v[spec::kSYM_K];
    if (k != kUNKNOWN_DIM && k > kernels::kConvMaxWidth)
    {
        logError(plugin, "conv width k = " + std::to_string(k) + " exceeds the kernel's maximum "
                + std::to_string(kernels::kConvMaxWidth));
        return false;
    }
    if (sym.v[spec::kSYM_B] > 65535)
    {
        logError(plugin, "batch " + std::to_string(sym.v[spec::kSYM_B]) + " exceeds the kernel's 65535");
        return false;
    }
    return true;
}

int32_t Int8CausalConv1dPlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* /*outputDesc*/, void const* const* inputs, void* const* outputs,
    void* /*workspace*/, cudaStream_t stream) noexcept
{
    kernels::CausalConv1dParams p = convInputParams<Spec>(inputDesc, inputs);
    p.u = static_cast<int8_t*>(outputs[Spec::Out::kU_Q]);
    p.conv_state_out = static_cast<int8_t*>(outputs[Spec::Out::kCONV_STATE_OUT]);
    p.x_scale = mFields[Spec::Field::kX_SCALE];
    p.weight_scale = mFields[Spec::Field::kWEIGHT_SCALE];
    p.out_scale = mFields[Spec::Field::kOUT_SCALE];
    return reportLaunch(Spec::kNAME, kernels::launch_int8_causal_conv1d(p, stream));
}

} // namespace trt
} // namespace edge_quamba
