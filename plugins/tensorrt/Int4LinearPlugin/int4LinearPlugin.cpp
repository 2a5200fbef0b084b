#include "int4LinearPlugin.h"

#include "kernels/int4_linear.h"

namespace edge_quamba
{
namespace trt
{
namespace
{
//! Largest K: the W4A8 partial sums stay in int32 (|acc| <= 128 * 128 * K; edge_quamba.quant.primitives.MAX_K).
constexpr int64_t kMaxInFeatures = 131071;

//! The dims every 4-bit linear reads at enqueue: x (b, l, K) and weight_packed (N, ceil(K / 2)), checked in
//! onShapeChange. TensorRT hands plugins compact kLINEAR tensors, so x's and y's row strides are K and N.
struct LinearDims
{
    int64_t M; // b * l rows
    int N;
    int K;
};

LinearDims linearDims(nvinfer1::PluginTensorDesc const* inputDesc, int32_t xIndex, int32_t weightIndex) noexcept
{
    nvinfer1::Dims const& x = inputDesc[xIndex].dims;
    return {leadingVolume(x, 2), static_cast<int>(inputDesc[weightIndex].dims.d[0]), static_cast<int>(x.d[2])};
}

//! The fields the three 4-bit launchers share (dims, group size, packed weights, group scales, bias, row strides),
//! filled from the plugin's inputs; Spec names the input indices, XIndex the activation input (kX_Q or kX).
template <class Spec, int32_t XIndex, class Params>
void fillInt4Weights(Params& p, nvinfer1::PluginTensorDesc const* inputDesc, void const* const* inputs,
    int32_t groupSize) noexcept
{
    LinearDims const d = linearDims(inputDesc, XIndex, Spec::In::kWEIGHT_PACKED);
    p.M = d.M;
    p.N = d.N;
    p.K = d.K;
    p.group_size = groupSize;
    p.x_row_stride = d.K;
    p.y_row_stride = d.N;
    p.w_packed = static_cast<uint8_t const*>(inputs[Spec::In::kWEIGHT_PACKED]); // int8 bytes read as uint8
    p.w_scale = static_cast<float const*>(inputs[Spec::In::kWEIGHT_SCALE]);
    p.bias = static_cast<float const*>(inputs[Spec::In::kBIAS]);
}
} // namespace

bool checkInt4LinearSizes(char const* plugin, SymbolValues const& sym, int32_t groupSize) noexcept
{
    int64_t const k = sym.v[spec::kSYM_IN_FEATURES];
    int64_t const packed = sym.v[spec::kSYM_PACKED];
    int64_t const groups = sym.v[spec::kSYM_GROUPS];
    if (k != kUNKNOWN_DIM && k > kMaxInFeatures)
    {
        logError(plugin, "in_features K = " + std::to_string(k) + " exceeds " + std::to_string(kMaxInFeatures)
                + " (the int32 partial sums)");
        return false;
    }
    if (k != kUNKNOWN_DIM && packed != kUNKNOWN_DIM && packed != (k + 1) / 2)
    {
        logError(plugin, "weight_packed has " + std::to_string(packed) + " bytes per row, K = " + std::to_string(k)
                + " needs ceil(K / 2) = " + std::to_string((k + 1) / 2));
        return false;
    }
    int64_t const needed = k == kUNKNOWN_DIM ? groups : (k + groupSize - 1) / groupSize;
    if (k != kUNKNOWN_DIM && groups != kUNKNOWN_DIM && groups != needed)
    {
        logError(plugin, "weight_scale has " + std::to_string(groups) + " groups per row, K = " + std::to_string(k)
                + " at group_size " + std::to_string(groupSize) + " needs " + std::to_string(needed));
        return false;
    }
    if (needed != kUNKNOWN_DIM && needed > kernels::kInt4MaxGroups)
    {
        logError(plugin, std::to_string(needed) + " groups per row exceed the kernels' "
                + std::to_string(kernels::kInt4MaxGroups));
        return false;
    }
    return true;
}

int32_t W4A8LinearPlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* /*outputDesc*/, void const* const* inputs, void* const* outputs,
    void* /*workspace*/, cudaStream_t stream) noexcept
{
    kernels::W4A8LinearParams p{};
    fillInt4Weights<Spec, Spec::In::kX_Q>(p, inputDesc, inputs, mIntFields[Spec::Field::kGROUP_SIZE]);
    p.x = static_cast<int8_t const*>(inputs[Spec::In::kX_Q]);
    p.y = static_cast<float*>(outputs[Spec::Out::kY]);
    p.x_scale = mFields[Spec::Field::kX_SCALE];
    return reportLaunch(Spec::kNAME, kernels::launch_w4a8_linear(p, stream));
}

int32_t W4A8LinearQuantizePlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* /*outputDesc*/, void const* const* inputs, void* const* outputs,
    void* /*workspace*/, cudaStream_t stream) noexcept
{
    kernels::W4A8LinearQuantizeParams p{};
    fillInt4Weights<Spec, Spec::In::kX_Q>(p, inputDesc, inputs, mIntFields[Spec::Field::kGROUP_SIZE]);
    p.x = static_cast<int8_t const*>(inputs[Spec::In::kX_Q]);
    p.y_q = static_cast<int8_t*>(outputs[Spec::Out::kY_Q]);
    p.x_scale = mFields[Spec::Field::kX_SCALE];
    p.out_scale = mFields[Spec::Field::kOUT_SCALE];
    return reportLaunch(Spec::kNAME, kernels::launch_w4a8_linear_quantize(p, stream));
}

int32_t W4A16LinearPlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* /*outputDesc*/, void const* const* inputs, void* const* outputs,
    void* /*workspace*/, cudaStream_t stream) noexcept
{
    kernels::W4A16LinearParams p{};
    fillInt4Weights<Spec, Spec::In::kX>(p, inputDesc, inputs, mIntFields[Spec::Field::kGROUP_SIZE]);
    p.x = static_cast<__half const*>(inputs[Spec::In::kX]);
    p.y = static_cast<__half*>(outputs[Spec::Out::kY]);
    return reportLaunch(Spec::kNAME, kernels::launch_w4a16_linear(p, stream));
}

} // namespace trt
} // namespace edge_quamba
