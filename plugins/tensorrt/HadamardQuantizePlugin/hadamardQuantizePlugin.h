// HadamardQuantize as a TensorRT IPluginV3: a thin wrapper over kernels::launch_hadamard_quantize.
// Op spec: edge_quamba/ops/specs.py (HADAMARD_QUANTIZE); reference: edge_quamba.quant.qops.hadamard_quantize.
//
//   input    y (b, l, d_in) fp32 (the gated scan output)
//   output   y_q (b, l, d_in) int8 = quantize(H y / sqrt(d_in), out_scale), bit-exact with the reference
//   field    out_scale (kFLOAT32, length 1, finite, > 0)
//
// d_in = m * 2^k with m in {1, 12, 20, 28} and d_in <= 16384 (kernels::hadamard_dim_supported); the b * l rows
// are independent.
#pragma once

#include "common/pluginBase.h"

namespace edge_quamba
{
namespace trt
{

class HadamardQuantizePlugin : public PluginBase<spec::HadamardQuantize, HadamardQuantizePlugin>
{
public:
    using Spec = spec::HadamardQuantize;
    using PluginBase::PluginBase;

    static bool checkSizes(SymbolValues const& sym) noexcept;

    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
};

class HadamardQuantizePluginCreator : public CreatorBase<spec::HadamardQuantize, HadamardQuantizePlugin>
{
};

} // namespace trt
} // namespace edge_quamba
