// Int8SelectiveScan as a TensorRT IPluginV3: a thin wrapper over kernels::launch_int8_selective_scan.
// Op spec: edge_quamba/ops/specs.py (INT8_SELECTIVE_SCAN); reference: edge_quamba.quant.qops.int8_selective_scan.
//
//   inputs   u_q, dt_q, z_q (b, l, d_in) int8; B_q, C_q (b, l, n) int8; ssm_state (b, d_in, n) fp32;
//            A (d_in, n) fp32 (= -exp(A_log)); D, dt_bias (d_in) fp32
//   outputs  y (b, l, d_in) fp32 (already gated by silu(z)), ssm_state_out (b, d_in, n) fp32
//   fields   u_scale, dt_scale, B_scale, C_scale, z_scale (kFLOAT32, length 1, finite, > 0)
//
// All tensors arrive contiguous (kLINEAR), so every sequence stride is the row length. n must be a power of two
// <= 32 (the kernel keeps one state element per lane of a warp-group; Mamba1 uses 16).
#pragma once

#include "common/pluginBase.h"

namespace edge_quamba
{
namespace trt
{

class Int8SelectiveScanPlugin : public PluginBase<spec::Int8SelectiveScan, Int8SelectiveScanPlugin>
{
public:
    using Spec = spec::Int8SelectiveScan;
    using PluginBase::PluginBase;

    static bool checkSizes(SymbolValues const& sym) noexcept;

    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
};

class Int8SelectiveScanPluginCreator : public CreatorBase<spec::Int8SelectiveScan, Int8SelectiveScanPlugin>
{
};

} // namespace trt
} // namespace edge_quamba
