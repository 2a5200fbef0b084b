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

namespace edge_quamba
{
namespace trt
{

class Int8CausalConv1dPlugin : public PluginBase<spec::Int8CausalConv1d, Int8CausalConv1dPlugin>
{
public:
    using Spec = spec::Int8CausalConv1d;
    using PluginBase::PluginBase;

    //! Limits of the kernel on the shape symbols known so far (kUNKNOWN_DIM skipped).
    static bool checkSizes(SymbolValues const& sym) noexcept;

    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
};

class Int8CausalConv1dPluginCreator : public CreatorBase<spec::Int8CausalConv1d, Int8CausalConv1dPlugin>
{
};

} // namespace trt
} // namespace edge_quamba
