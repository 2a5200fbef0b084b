#include "int8SelectiveScanPlugin.h"

#include "kernels/selective_scan.h"

namespace edge_quamba
{
namespace trt
{

bool Int8SelectiveScanPlugin::checkSizes(SymbolValues const& sym) noexcept
{
    int64_t const n = sym.v[spec::kSYM_N];
    if (n != kUNKNOWN_DIM && (n > 32 || (n & (n - 1)) != 0))
    {
        logError(Spec::kNAME, "state size n = " + std::to_string(n) + " is not a power of two <= 32 (kernel limit)");
        return false;
    }
    return true;
}

int32_t Int8SelectiveScanPlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* /*outputDesc*/, void const* const* inputs, void* const* outputs,
    void* /*workspace*/, cudaStream_t stream) noexcept
{
    nvinfer1::Dims const& u = inputDesc[Spec::In::kU_Q].dims; // (b, l, d_in), checked in onShapeChange
    kernels::SelectiveScanParams p{};
    p.batch = static_cast<int>(u.d[0]);
    p.seqlen = static_cast<int>(u.d[1]);
    p.dim = static_cast<int>(u.d[2]);
    p.dstate = static_cast<int>(inputDesc[Spec::In::kB_Q].dims.d[2]);
    int64_t const channelRow = p.dim;   // seq stride of the compact (b, l, d_in) tensors
    int64_t const stateRow = p.dstate;  // seq stride of the compact (b, l, n) tensors
    p.u = static_cast<int8_t const*>(inputs[Spec::In::kU_Q]);
    p.dt = static_cast<int8_t const*>(inputs[Spec::In::kDT_Q]);
    p.z = static_cast<int8_t const*>(inputs[Spec::In::kZ_Q]);
    p.B = static_cast<int8_t const*>(inputs[Spec::In::kB_Q]);
    p.C = static_cast<int8_t const*>(inputs[Spec::In::kC_Q]);
    p.u_seq_stride = p.dt_seq_stride = p.z_seq_stride = channelRow;
    p.u_batch_stride = p.dt_batch_stride = p.z_batch_stride = p.seqlen * channelRow;
    p.B_seq_stride = p.C_seq_stride = stateRow;
    p.B_batch_stride = p.C_batch_stride = p.seqlen * stateRow;
    p.ssm_state_in = static_cast<float const*>(inputs[Spec::In::kSSM_STATE]);
    p.A = static_cast<float const*>(inputs[Spec::In::kA]);
    p.D = static_cast<float const*>(inputs[Spec::In::kD]);
    p.dt_bias = static_cast<float const*>(inputs[Spec::In::kDT_BIAS]);
    p.y = static_cast<float*>(outputs[Spec::Out::kY]);
    p.ssm_state_out = static_cast<float*>(outputs[Spec::Out::kSSM_STATE_OUT]);
    p.u_scale = mFields[Spec::Field::kU_SCALE];
    p.dt_scale = mFields[Spec::Field::kDT_SCALE];
    p.B_scale = mFields[Spec::Field::kB_SCALE];
    p.C_scale = mFields[Spec::Field::kC_SCALE];
    p.z_scale = mFields[Spec::Field::kZ_SCALE];
    return reportLaunch(Spec::kNAME, kernels::launch_int8_selective_scan(p, stream));
}

} // namespace trt
} // namespace edge_quamba
