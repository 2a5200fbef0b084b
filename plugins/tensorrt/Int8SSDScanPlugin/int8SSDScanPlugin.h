// Int8SSDScan as a TensorRT IPluginV3: a thin wrapper over kernels::launch_int8_ssd_scan. Op spec:
// edge_quamba/ops/specs.py (INT8_SSD_SCAN); reference: edge_quamba.quant.qops.int8_ssd_scan (Mamba2's SSD recurrence,
// token by token, float32 state; no gate: Mamba2 gates in its norm).
//
//   inputs   x_q (b, l, d_in) int8, dt_q (b, l, h) int8, B_q, C_q (b, l, gn) int8 (every code read with -128 as
//            -127), ssm_state (b, h, p, n) fp32, A, D, dt_bias (h) fp32, x_scales (d_in) fp32, B_scales,
//            C_scales (gn) fp32
//   outputs  y (b, l, d_in) fp32 (= h C + D x, before the gated norm), ssm_state_out (b, h, p, n) fp32
//   field    dt_scale (kFLOAT32, length 1, finite, > 0)
//
// The spec's symbols carry relations the kernel needs (checked as soon as the dims are known): d_in = h * p, gn a
// multiple of n (g = gn / n state groups) and h a multiple of g (head hd reads group hd / (h / g)); n <= 256
// (kernels::kSsdMaxState), b <= 65535 and h <= 65535 (grid y and z).
#pragma once

#include "common/pluginBase.h"

namespace edge_quamba
{
namespace trt
{

class Int8SSDScanPlugin : public PluginBase<spec::Int8SSDScan, Int8SSDScanPlugin>
{
public:
    using Spec = spec::Int8SSDScan;
    using PluginBase::PluginBase;

    //! Limits of the kernel and the dim relations above, on the symbols known so far (kUNKNOWN_DIM skipped).
    static bool checkSizes(SymbolValues const& sym) noexcept;

    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
};

class Int8SSDScanPluginCreator : public CreatorBase<spec::Int8SSDScan, Int8SSDScanPlugin>
{
};

} // namespace trt
} // namespace edge_quamba
