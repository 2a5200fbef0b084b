#include "int8SSDScanPlugin.h"

#include "kernels/ssd_scan.h"

namespace edge_quamba
{
namespace trt
{

bool Int8SSDScanPlugin::checkSizes(SymbolValues const& sym) noexcept
{
    int64_t const b = sym.v[spec::kSYM_B];
    int64_t const dIn = sym.v[spec::kSYM_D_IN];
    int64_t const h = sym.v[spec::kSYM_H];
    int64_t const p = sym.v[spec::kSYM_P];
    int64_t const n = sym.v[spec::kSYM_N];
    int64_t const gn = sym.v[spec::kSYM_GN];
    auto const known = [](int64_t v) { return v != kUNKNOWN_DIM; };
    if (known(n) && n > kernels::kSsdMaxState)
    {
        logError(Spec::kNAME, "state size n = " + std::to_string(n) + " exceeds the kernel's "
                + std::to_string(kernels::kSsdMaxState));
        return false;
    }
    if (b > 65535 || h > 65535)
    {
        logError(Spec::kNAME, "batch " + std::to_string(b) + " or heads " + std::to_string(h)
                + " exceed the kernel's 65535");
        return false;
    }
    if (known(dIn) && known(h) && known(p) && dIn != h * p)
    {
        logError(Spec::kNAME, "d_in = " + std::to_string(dIn) + " is not h * p = " + std::to_string(h) + " * "
                + std::to_string(p) + " (x_q and ssm_state disagree)");
        return false;
    }
    if (known(gn) && known(n) && (gn % n != 0 || (known(h) && h % (gn / n) != 0)))
    {
        logError(Spec::kNAME, "B and C have " + std::to_string(gn) + " channels: not g groups of n = "
                + std::to_string(n) + " states with g dividing the heads" + (known(h) ? " (" + std::to_string(h) + ")" : ""));
        return false;
    }
    return true;
}

int32_t Int8SSDScanPlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* /*outputDesc*/, void const* const* inputs, void* const* outputs,
    void* /*workspace*/, cudaStream_t stream) noexcept
{
    // Shapes were checked in onShapeChange; every tensor is compact, so a sequence stride is the row length.
    nvinfer1::Dims const& state = inputDesc[Spec::In::kSSM_STATE].dims; // (b, h, p, n)
    nvinfer1::Dims const& x = inputDesc[Spec::In::kX_Q].dims;           // (b, l, d_in)
    int64_t const gn = inputDesc[Spec::In::kB_Q].dims.d[2];
    kernels::SsdScanParams p{};
    p.batch = static_cast<int>(x.d[0]);
    p.seqlen = static_cast<int>(x.d[1]);
    p.nheads = static_cast<int>(state.d[1]);
    p.headdim = static_cast<int>(state.d[2]);
    p.dstate = static_cast<int>(state.d[3]);
    p.ngroups = static_cast<int>(gn / p.dstate);
    p.x = static_cast<int8_t const*>(inputs[Spec::In::kX_Q]);
    p.x_seq_stride = x.d[2];
    p.x_batch_stride = p.seqlen * x.d[2];
    p.dt = static_cast<int8_t const*>(inputs[Spec::In::kDT_Q]);
    p.dt_seq_stride = p.nheads;
    p.dt_batch_stride = static_cast<int64_t>(p.seqlen) * p.nheads;
    p.B = static_cast<int8_t const*>(inputs[Spec::In::kB_Q]);
    p.C = static_cast<int8_t const*>(inputs[Spec::In::kC_Q]);
    p.B_seq_stride = p.C_seq_stride = gn;
    p.B_batch_stride = p.C_batch_stride = p.seqlen * gn;
    p.ssm_state_in = static_cast<float const*>(inputs[Spec::In::kSSM_STATE]);
    p.A = static_cast<float const*>(inputs[Spec::In::kA]);
    p.D = static_cast<float const*>(inputs[Spec::In::kD]);
    p.dt_bias = static_cast<float const*>(inputs[Spec::In::kDT_BIAS]);
    p.x_scales = static_cast<float const*>(inputs[Spec::In::kX_SCALES]);
    p.B_scales = static_cast<float const*>(inputs[Spec::In::kB_SCALES]);
    p.C_scales = static_cast<float const*>(inputs[Spec::In::kC_SCALES]);
    p.dt_scale = mFields[Spec::Field::kDT_SCALE];
    p.y = static_cast<float*>(outputs[Spec::Out::kY]);
    p.ssm_state_out = static_cast<float*>(outputs[Spec::Out::kSSM_STATE_OUT]);
    return reportLaunch(Spec::kNAME, kernels::launch_int8_ssd_scan(p, stream));
}

} // namespace trt
} // namespace edge_quamba
