#include "int8CausalConv1dChannelScalesPlugin.h"

#include "kernels/causal_conv1d.h"

namespace edge_quamba
{
namespace trt
{

bool Int8CausalConv1dChannelScalesPlugin::checkSizes(SymbolValues const& sym) noexcept
{
    int64_t const k = sym.v[spec::kSYM_K];
    if (k != kUNKNOWN_DIM && k > kernels::kConvMaxWidth)
    {
        logError(Spec::kNAME, "conv width k = " + std::to_string(k) + " exceeds the kernel's maximum "
                + std::to_string(kernels::kConvMaxWidth));
        return false;
    }
    if (sym.v[spec::kSYM_B] > 65535)
    {
        logError(Spec::kNAME, "batch " + std::to_string(sym.v[spec::kSYM_B]) + " exceeds the kernel's 65535");
        return false;
    }
    return true;
}

int32_t Int8CausalConv1dChannelScalesPlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* /*outputDesc*/, void const* const* inputs, void* const* outputs,
    void* /*workspace*/, cudaStream_t stream) noexcept
{
    // Shapes were checked in onShapeChange; here they are only read. x_q (b, l, conv_dim) contiguous.
    nvinfer1::Dims const& x = inputDesc[Spec::In::kX_Q].dims;
    kernels::CausalConv1dParams p{};
    p.batch = static_cast<int>(x.d[0]);
    p.seqlen = static_cast<int>(x.d[1]);
    p.dim = static_cast<int>(x.d[2]);
    p.width = static_cast<int>(inputDesc[Spec::In::kCONV_STATE_Q].dims.d[2]);
    p.x_seq_stride = p.dim;
    p.x_batch_stride = static_cast<int64_t>(p.seqlen) * p.dim;
    p.x = static_cast<int8_t const*>(inputs[Spec::In::kX_Q]);
    p.conv_state_in = static_cast<int8_t const*>(inputs[Spec::In::kCONV_STATE_Q]);
    p.weight = static_cast<int8_t const*>(inputs[Spec::In::kWEIGHT_Q]);
    p.bias = static_cast<float const*>(inputs[Spec::In::kBIAS]);
    p.out_scales = static_cast<float const*>(inputs[Spec::In::kOUT_SCALES]);
    p.u = static_cast<int8_t*>(outputs[Spec::Out::kOUT_Q]);
    p.conv_state_out = static_cast<int8_t*>(outputs[Spec::Out::kCONV_STATE_OUT]);
    p.x_scale = mFields[Spec::Field::kX_SCALE];
    p.weight_scale = mFields[Spec::Field::kWEIGHT_SCALE];
    return reportLaunch(Spec::kNAME, kernels::launch_int8_causal_conv1d(p, stream));
}

} // namespace trt
} // namespace edge_quamba
