#include "int8CausalConv1dChannelScalesPlugin.h"

namespace edge_quamba
{
namespace trt
{

int32_t Int8CausalConv1dChannelScalesPlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* /*outputDesc*/, void const* const* inputs, void* const* outputs,
    void* /*workspace*/, cudaStream_t stream) noexcept
{
    // x_q is (b, l, conv_dim): in_proj's x | B | C codes; channel c is written at out_scales[c]
    kernels::CausalConv1dParams p = convInputParams<Spec>(inputDesc, inputs);
    p.out_scales = static_cast<float const*>(inputs[Spec::In::kOUT_SCALES]);
    p.u = static_cast<int8_t*>(outputs[Spec::Out::kOUT_Q]);
    p.conv_state_out = static_cast<int8_t*>(outputs[Spec::Out::kCONV_STATE_OUT]);
    p.x_scale = mFields[Spec::Field::kX_SCALE];
    p.weight_scale = mFields[Spec::Field::kWEIGHT_SCALE];
    return reportLaunch(Spec::kNAME, kernels::launch_int8_causal_conv1d(p, stream));
}

} // namespace trt
} // namespace edge_quamba
