#include "gatedRMSNormQuantizePlugin.h"

#include "kernels/hadamard_quantize.h"
#include "kernels/rms_norm_quantize.h"

namespace edge_quamba
{
namespace trt
{
namespace
{
//! The launcher's params from the (b, l, d_in) tensors and the fields (the two specs share their layout).
template <class Spec>
kernels::GatedRmsNormQuantizeParams gatedParams(nvinfer1::PluginTensorDesc const* inputDesc, void const* const* inputs,
    void* const* outputs, std::array<float, Spec::kNB_FIELDS> const& fields, int32_t groupSize) noexcept
{
    nvinfer1::Dims const& y = inputDesc[Spec::In::kY].dims; // (b, l, d_in), checked in onShapeChange
    kernels::GatedRmsNormQuantizeParams p{};
    p.dim = static_cast<int>(y.d[y.nbDims - 1]);
    p.rows = leadingVolume(y, y.nbDims - 1);
    p.group_size = groupSize;
    p.y_row_stride = p.z_row_stride = p.dim;
    p.y = static_cast<float const*>(inputs[Spec::In::kY]);
    p.z = static_cast<int8_t const*>(inputs[Spec::In::kZ_Q]);
    p.weight = static_cast<float const*>(inputs[Spec::In::kWEIGHT]);
    p.y_q = static_cast<int8_t*>(outputs[Spec::Out::kY_Q]);
    p.z_scale = fields[Spec::Field::kZ_SCALE];
    p.eps = fields[Spec::Field::kEPS];
    p.out_scale = fields[Spec::Field::kOUT_SCALE];
    return p;
}
} // namespace

bool checkGatedNormSizes(char const* plugin, SymbolValues const& sym, int32_t groupSize, bool hadamard) noexcept
{
    int64_t const d = sym.v[spec::kSYM_D_IN];
    if (!hadamard && groupSize > kernels::kRmsNormMaxDim)
    {
        logError(plugin, "group_size " + std::to_string(groupSize) + " exceeds the kernel's "
                + std::to_string(kernels::kRmsNormMaxDim));
        return false;
    }
    if (d == kUNKNOWN_DIM)
    {
        return true;
    }
    if (d % groupSize != 0 || d / groupSize > 65535)
    {
        logError(plugin, "d_in = " + std::to_string(d) + " is not a whole number of at most 65535 groups of group_size "
                + std::to_string(groupSize));
        return false;
    }
    if (hadamard && !kernels::hadamard_dim_supported(static_cast<int>(d)))
    {
        logError(plugin, "d_in = " + std::to_string(d)
                + " is not m * 2^k with m in {1, 12, 20, 28} and <= 16384 (kernel limit)");
        return false;
    }
    return true;
}

int32_t GatedRMSNormQuantizePlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* /*outputDesc*/, void const* const* inputs, void* const* outputs,
    void* /*workspace*/, cudaStream_t stream) noexcept
{
    auto const p = gatedParams<Spec>(inputDesc, inputs, outputs, mFields, mIntFields[Spec::Field::kGROUP_SIZE]);
    return reportLaunch(Spec::kNAME, kernels::launch_gated_rms_norm_quantize(p, stream));
}

int32_t GatedRMSNormHadamardQuantizePlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* /*outputDesc*/, void const* const* inputs, void* const* outputs,
    void* /*workspace*/, cudaStream_t stream) noexcept
{
    auto const p = gatedParams<Spec>(inputDesc, inputs, outputs, mFields, mIntFields[Spec::Field::kGROUP_SIZE]);
    return reportLaunch(Spec::kNAME, kernels::launch_gated_rms_norm_hadamard_quantize(p, stream));
}

} // namespace trt
} // namespace edge_quamba
