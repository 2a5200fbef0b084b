#include "selectiveScanF16Plugin.h"

#include "kernels/selective_scan.h"

namespace edge_quamba
{
namespace trt
{

bool SelectiveScanF16Plugin::checkSizes(SymbolValues const& sym) noexcept
{
    int64_t const n = sym.v[spec::kSYM_N];
    if (n != kUNKNOWN_DIM && (n > 32 || (n & (n - 1)) != 0))
    {
        logError(Spec::kNAME, "state size n = " + std::to_string(n) + " is not a power of two <= 32 (kernel limit)");
        return false;
    }
    if (sym.v[spec::kSYM_B] > 65535)
    {
        logError(Spec::kNAME, "batch " + std::to_string(sym.v[spec::kSYM_B]) + " exceeds the kernel's 65535");
        return false;
    }
    return true;
}

int32_t SelectiveScanF16Plugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* /*outputDesc*/, void const* const* inputs, void* const* outputs,
    void* /*workspace*/, cudaStream_t stream) noexcept
{
    nvinfer1::Dims const& u = inputDesc[Spec::In::kU].dims; // (b, l, d_in), checked in onShapeChange
    kernels::SelectiveScanF16Params p{};
    p.batch = static_cast<int>(u.d[0]);
    p.seqlen = static_cast<int>(u.d[1]);
    p.dim = static_cast<int>(u.d[2]);
    p.dstate = static_cast<int>(inputDesc[Spec::In::kB].dims.d[2]);
    p.u = static_cast<__half const*>(inputs[Spec::In::kU]);
    p.u_seq_stride = p.dim;
    p.u_batch_stride = static_cast<int64_t>(p.seqlen) * p.dim;
    p.delta = static_cast<float const*>(inputs[Spec::In::kDELTA]);
    p.delta_seq_stride = p.dim;
    p.delta_batch_stride = p.u_batch_stride;
    p.B = static_cast<__half const*>(inputs[Spec::In::kB]);
    p.C = static_cast<__half const*>(inputs[Spec::In::kC]);
    p.B_seq_stride = p.C_seq_stride = p.dstate;
    p.B_batch_stride = p.C_batch_stride = static_cast<int64_t>(p.seqlen) * p.dstate;
    p.A = static_cast<float const*>(inputs[Spec::In::kA]);
    p.D = static_cast<__half const*>(inputs[Spec::In::kD]);
    p.ssm_state_in = static_cast<float const*>(inputs[Spec::In::kSSM_STATE]);
    p.y = static_cast<float*>(outputs[Spec::Out::kY]);
    p.ssm_state_out = static_cast<float*>(outputs[Spec::Out::kSSM_STATE_OUT]);
    return reportLaunch(Spec::kNAME, kernels::launch_selective_scan_f16(p, stream));
}

} // namespace trt
} // namespace edge_quamba
