#include "hadamardQuantizePlugin.h"

#include "kernels/hadamard_quantize.h"

namespace edge_quamba
{
namespace trt
{

bool HadamardQuantizePlugin::checkSizes(SymbolValues const& sym) noexcept
{
    int64_t const n = sym.v[spec::kSYM_D_IN];
    if (n != kUNKNOWN_DIM && !kernels::hadamard_dim_supported(static_cast<int>(n)))
    {
        logError(Spec::kNAME, "d_in = " + std::to_string(n)
                + " is not m * 2^k with m in {1, 12, 20, 28} and <= 16384 (kernel limit)");
        return false;
    }
    return true;
}

int32_t HadamardQuantizePlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* /*outputDesc*/, void const* const* inputs, void* const* outputs,
    void* /*workspace*/, cudaStream_t stream) noexcept
{
    nvinfer1::Dims const& y = inputDesc[Spec::In::kY].dims; // (b, l, d_in), checked in onShapeChange
    kernels::HadamardQuantizeParams p{};
    p.dim = static_cast<int>(y.d[y.nbDims - 1]);
    p.rows = leadingVolume(y, y.nbDims - 1);
    p.y_row_stride = p.dim;
    p.y = static_cast<float const*>(inputs[Spec::In::kY]);
    p.y_q = static_cast<int8_t*>(outputs[Spec::Out::kY_Q]);
    p.out_scale = mFields[Spec::Field::kOUT_SCALE];
    return reportLaunch(Spec::kNAME, kernels::launch_hadamard_quantize(p, stream));
}

} // namespace trt
} // namespace edge_quamba
