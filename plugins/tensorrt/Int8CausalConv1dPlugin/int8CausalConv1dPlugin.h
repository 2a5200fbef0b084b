// Int8CausalConv1d as a TensorRT IPluginV3: a thin wrapper over kernels::launch_int8_causal_conv1d.
// Op spec: edge_quamba/ops/specs.py (INT8_CAUSAL_CONV1D); reference: edge_quamba.quant.qops.int8_causal_conv1d.
//
//   inputs   x_q (b, l, d_in) int8, conv_state_q (b, d_in, k) int8, weight_q (d_in, k) int8, bias (d_in) fp32
//   outputs  u_q (b, l, d_in) int8, conv_state_out (b, d_in, k) int8
//   fields   x_scale, weight_scale, out_scale (kFLOAT32, length 1, finite, > 0)
//
// TensorRT hands plugins contiguous kLINEAR tensors, so x_q arrives compact (sequence stride d_in) even where the
// graph slices it out of in_proj's (b, l, 2 d_in) output. k <= kernels::kConvMaxWidth (4) and b <= 65535 (grid z).
#pragma once

#include "common/pluginBase.h"
#include "kernels/causal_conv1d.h"

namespace edge_quamba
{
namespace trt
{

//! The conv kernel's limits on the shape symbols known so far (kUNKNOWN_DIM skipped), for both conv plugins.
bool checkConvSizes(char const* plugin, SymbolValues const& sym) noexcept;

//! The launch parameters both conv plugins read from their inputs (Spec::In names x_q, conv_state_q, weight_q, bias;
//! shapes were checked in onShapeChange). x_q (b, l, dim) arrives contiguous.
template <class Spec>
kernels::CausalConv1dParams convInputParams(
    nvinfer1::PluginTensorDesc const* inputDesc, void const* const* inputs) noexcept
{
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
    return p;
}

class Int8CausalConv1dPlugin : public PluginBase<spec::Int8CausalConv1d, Int8CausalConv1dPlugin>
{
public:
    using Spec = spec::Int8CausalConv1d;
    using PluginBase::PluginBase;

    static bool checkSizes(SymbolValues const& sym) noexcept
    {
        return checkConvSizes(Spec::kNAME, sym);
    }

    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
};

class Int8CausalConv1dPluginCreator : public CreatorBase<spec::Int8CausalConv1d, Int8CausalConv1dPlugin>
{
};

} // namespace trt
} // namespace edge_quamba
