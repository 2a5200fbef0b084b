// Mamba2's gated RMSNorm fused with the quantize of out_proj's input, as TensorRT IPluginV3s: thin wrappers over
// kernels::launch_gated_rms_norm_quantize (GatedRMSNormQuantize) and kernels::launch_gated_rms_norm_hadamard_quantize
// (GatedRMSNormHadamardQuantize: the Hadamard transform between norm and quantize). Op specs: edge_quamba/ops/specs.py
// (GATED_RMS_NORM_QUANTIZE, GATED_RMS_NORM_HADAMARD_QUANTIZE); references: edge_quamba.quant.qops
// .gated_rms_norm_quantize, gated_rms_norm_hadamard_quantize. One folder for the two: the same inputs, fields and
// params struct; they differ in the launcher and its width limits.
//
//   inputs   y (b, l, d_in) fp32 (the SSD scan's output), z_q (b, l, d_in) int8 (in_proj's gate codes, -128 read as
//            -127), weight (d_in) fp32 (the norm's weight)
//   output   y_q (b, l, d_in) int8 in [-127, 127] (out_proj reads it)
//   fields   z_scale, out_scale (kFLOAT32 scales, finite, > 0); eps (kFLOAT32, finite, > 0);
//            group_size (kINT32, >= 1): channels per RMS group, d_in / ngroups
//
// Limits (refused at build time): group_size divides d_in, d_in / group_size <= 65535 (grid y); without Hadamard
// group_size <= kernels::kRmsNormMaxDim (8192: the group lives in registers); with Hadamard d_in = m * 2^k with m in
// {1, 12, 20, 28} and d_in <= 16384 (kernels::hadamard_dim_supported).
#pragma once

#include "common/pluginBase.h"

namespace edge_quamba
{
namespace trt
{

//! The two plugins' limits (kUNKNOWN_DIM skipped): see the file comment.
bool checkGatedNormSizes(char const* plugin, SymbolValues const& sym, int32_t groupSize, bool hadamard) noexcept;

class GatedRMSNormQuantizePlugin : public PluginBase<spec::GatedRMSNormQuantize, GatedRMSNormQuantizePlugin>
{
public:
    using Spec = spec::GatedRMSNormQuantize;
    using PluginBase::PluginBase;

    bool checkSizes(SymbolValues const& sym) const noexcept
    {
        return checkGatedNormSizes(Spec::kNAME, sym, mIntFields[Spec::Field::kGROUP_SIZE], false);
    }

    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
};

class GatedRMSNormHadamardQuantizePlugin
    : public PluginBase<spec::GatedRMSNormHadamardQuantize, GatedRMSNormHadamardQuantizePlugin>
{
public:
    using Spec = spec::GatedRMSNormHadamardQuantize;
    using PluginBase::PluginBase;

    bool checkSizes(SymbolValues const& sym) const noexcept
    {
        return checkGatedNormSizes(Spec::kNAME, sym, mIntFields[Spec::Field::kGROUP_SIZE], true);
    }

    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
};

class GatedRMSNormQuantizePluginCreator : public CreatorBase<spec::GatedRMSNormQuantize, GatedRMSNormQuantizePlugin>
{
};

class GatedRMSNormHadamardQuantizePluginCreator
    : public CreatorBase<spec::GatedRMSNormHadamardQuantize, GatedRMSNormHadamardQuantizePlugin>
{
};

} // namespace trt
} // namespace edge_quamba
