// Int8CausalConv1dChannelScales as a TensorRT IPluginV3: a thin wrapper over kernels::launch_int8_causal_conv1d with
// per-channel output scales (kernels::CausalConv1dParams::out_scales). Op spec: edge_quamba/ops/specs.py
// (INT8_CONV1D_CHANNEL_SCALES); reference: edge_quamba.quant.qops.int8_causal_conv1d_channel_scales (Mamba2's conv over
// x | B | C).
//
//   inputs   x_q (b, l, conv_dim) int8 (in_proj's xBC codes; -128 read as -127), conv_state_q (b, conv_dim, k) int8,
//            weight_q (conv_dim, k) int8, bias (conv_dim) fp32, out_scales (conv_dim) fp32 (each finite, > 0)
//   outputs  out_q (b, l, conv_dim) int8 (channel c at out_scales[c], in [-127, 127]),
//            conv_state_out (b, conv_dim, k) int8 (the last k inputs as read)
//   fields   x_scale, weight_scale (kFLOAT32, length 1, finite, > 0)
//
// k <= kernels::kConvMaxWidth (4) and b <= 65535 (grid z).
#pragma once

#include "Int8CausalConv1dPlugin/int8CausalConv1dPlugin.h"

namespace edge_quamba
{
namespace trt
{

class Int8CausalConv1dChannelScalesPlugin
    : public PluginBase<spec::Int8CausalConv1dChannelScales, Int8CausalConv1dChannelScalesPlugin>
{
public:
    using Spec = spec::Int8CausalConv1dChannelScales;
    using PluginBase::PluginBase;

    static bool checkSizes(SymbolValues const& sym) noexcept
    {
        return checkConvSizes(Spec::kNAME, sym);
    }

    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
};

class Int8CausalConv1dChannelScalesPluginCreator
    : public CreatorBase<spec::Int8CausalConv1dChannelScales, Int8CausalConv1dChannelScalesPlugin>
{
};

} // namespace trt
} // namespace edge_quamba
