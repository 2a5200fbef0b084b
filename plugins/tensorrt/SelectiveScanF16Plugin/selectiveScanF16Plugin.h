// SelectiveScanF16 as a TensorRT IPluginV3: a thin wrapper over kernels::launch_selective_scan_f16, the scan of the
// W4A16 (float16) model. Op spec: edge_quamba/ops/specs.py (SELECTIVE_SCAN_F16); reference:
// edge_quamba.models.mamba.selective_scan (op edge_quamba::selective_scan).
//
//   inputs   u (b, l, d_in) fp16 (silu of the conv), delta (b, l, d_in) fp32 (softplus applied), A (d_in, n) fp32,
//            B, C (b, l, n) fp16 (pieces of x_proj's output), D (d_in) fp16, ssm_state (b, d_in, n) fp32
//   outputs  y (b, l, d_in) fp32 = C . h + u D (no gate: the graph multiplies by silu(z)),
//            ssm_state_out (b, d_in, n) fp32
//   fields   none
//
// Limits (refused at build time): n a power of two <= 32 (Mamba1: 16), b <= 65535 (grid y), sizes < 2^31. TensorRT
// passes every input compact, so the sequence strides are the row lengths (d_in for u and delta, n for B and C).
// Floats match the reference within a tolerance (expf and the order of the sum over n), as the kernel's header says.
#pragma once

#include "common/pluginBase.h"

namespace edge_quamba
{
namespace trt
{

class SelectiveScanF16Plugin : public PluginBase<spec::SelectiveScanF16, SelectiveScanF16Plugin>
{
public:
    using Spec = spec::SelectiveScanF16;
    using PluginBase::PluginBase;

    static bool checkSizes(SymbolValues const& sym) noexcept;

    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
};

class SelectiveScanF16PluginCreator : public CreatorBase<spec::SelectiveScanF16, SelectiveScanF16Plugin>
{
};

} // namespace trt
} // namespace edge_quamba
