// The 4-bit-weight linears as TensorRT IPluginV3s: thin wrappers over the launchers of kernels/int4_linear.h.
// Op specs: edge_quamba/ops/specs.py (W4A8_LINEAR, W4A8_LINEAR_QUANTIZE, W4A16_LINEAR); references:
// edge_quamba.quant.qops.w4a8_linear, w4a8_linear_quantize, w4a16_linear. One folder for the three: they share their
// inputs, shape rules and limits, and differ only in the activation/output dtypes and the launcher they call.
//
//   inputs   x_q (b, l, K) int8 (W4A16: x (b, l, K) fp16)
//            weight_packed (N, ceil(K / 2)) int8: the artifact's uint8 bytes (two int4 codes per byte, low nibble
//              first), reinterpreted as int8 because TensorRT 10.3's ONNX parser takes no UINT8 initializer; the
//              kernels read them as uint8_t (the same bits)
//            weight_scale (N, G) fp32, G = ceil(K / group_size); bias (N) fp32 (zeros when the linear has none)
//   output   W4A8Linear: y (b, l, N) fp32; W4A8LinearQuantize: y_q (b, l, N) int8 at out_scale; W4A16Linear: y fp16
//   fields   x_scale (W4A8), out_scale (W4A8LinearQuantize): kFLOAT32, finite, > 0;
//            group_size: kINT32, >= 1 (the parser passes an INT attribute as kINT32)
//
// Prefill and decode are the same plugin: each launcher picks, per enqueue, the decode GEMV (M = b * l <= 16) or the
// tensor-core prefill GEMM (larger M, where K % 32 == 0 and group_size % 32 == 0; the GEMV otherwise), so a plugin
// object serves every length TensorRT's profile allows. Limits (refused at build time): K <= 131071 (the int32
// partial sums; primitives.MAX_K), G <= kernels::kInt4MaxGroups, ceil(K / 2) and ceil(K / group_size) equal to the
// weight's and the scales' widths, every size < 2^31.
#pragma once

#include "common/pluginBase.h"

namespace edge_quamba
{
namespace trt
{

//! Limits and dim relations of every 4-bit linear (kUNKNOWN_DIM skipped): see the file comment.
bool checkInt4LinearSizes(char const* plugin, SymbolValues const& sym, int32_t groupSize) noexcept;

class W4A8LinearPlugin : public PluginBase<spec::W4A8Linear, W4A8LinearPlugin>
{
public:
    using Spec = spec::W4A8Linear;
    using PluginBase::PluginBase;

    bool checkSizes(SymbolValues const& sym) const noexcept
    {
        return checkInt4LinearSizes(Spec::kNAME, sym, mIntFields[Spec::Field::kGROUP_SIZE]);
    }

    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
};

class W4A8LinearQuantizePlugin : public PluginBase<spec::W4A8LinearQuantize, W4A8LinearQuantizePlugin>
{
public:
    using Spec = spec::W4A8LinearQuantize;
    using PluginBase::PluginBase;

    bool checkSizes(SymbolValues const& sym) const noexcept
    {
        return checkInt4LinearSizes(Spec::kNAME, sym, mIntFields[Spec::Field::kGROUP_SIZE]);
    }

    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
};

class W4A16LinearPlugin : public PluginBase<spec::W4A16Linear, W4A16LinearPlugin>
{
public:
    using Spec = spec::W4A16Linear;
    using PluginBase::PluginBase;

    bool checkSizes(SymbolValues const& sym) const noexcept
    {
        return checkInt4LinearSizes(Spec::kNAME, sym, mIntFields[Spec::Field::kGROUP_SIZE]);
    }

    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
};

class W4A8LinearPluginCreator : public CreatorBase<spec::W4A8Linear, W4A8LinearPlugin>
{
};

class W4A8LinearQuantizePluginCreator : public CreatorBase<spec::W4A8LinearQuantize, W4A8LinearQuantizePlugin>
{
};

class W4A16LinearPluginCreator : public CreatorBase<spec::W4A16Linear, W4A16LinearPlugin>
{
};

} // namespace trt
} // namespace edge_quamba
