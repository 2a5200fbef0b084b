// w4_harness selftest: the 4-bit configs' plugins (W4A8Linear, W4A8LinearQuantize, W4A16Linear, SelectiveScanF16)
// through their own interfaces on the host (no GPU): see w4Run.cpp for the whole tool.
#include "w4Harness.h"
#include "selftestCommon.h"

#include <algorithm>
#include <cstring>

namespace edge_quamba
{
namespace trt
{
namespace w4test
{
namespace
{

// ---- selftest -------------------------------------------------------------------------------------------------

//! Valid fields: scales 0.0173 and 0.05, group_size ``groupSize``.
template <class Spec>
Fields validFields(int32_t groupSize)
{
    Fields f;
    for (int32_t i = 0; i < Spec::kNB_FIELDS; ++i)
    {
        if (Spec::kFIELD_TYPES[i] == PluginFieldType::kINT32)
        {
            f.addInt(Spec::kFIELD_NAMES[i], groupSize);
        }
        else
        {
            f.addFloat(Spec::kFIELD_NAMES[i], i == 0 ? 0.0173F : 0.05F);
        }
    }
    return f;
}

template <class Spec>
void selftestCreateValidation(IPluginCreatorV3One* creator, std::string const& op)
{
    for (int32_t bad : {0, -64})
    {
        Fields f = validFields<Spec>(bad);
        check(creator->createPlugin(op.c_str(), f.collection(), TensorRTPhase::kBUILD) == nullptr,
            op + ": createPlugin refuses group_size = " + std::to_string(bad));
    }
    Fields asFloat;
    for (int32_t i = 0; i < Spec::kNB_FIELDS; ++i)
    {
        asFloat.addFloat(Spec::kFIELD_NAMES[i], 64.0F); // group_size as kFLOAT32: the wrong field type
    }
    check(creator->createPlugin(op.c_str(), asFloat.collection(), TensorRTPhase::kBUILD) == nullptr,
        op + ": createPlugin refuses group_size given as kFLOAT32");
    for (int32_t i = 0; i < Spec::kNB_FIELDS; ++i)
    {
        Fields missing;
        for (int32_t j = 0; j < Spec::kNB_FIELDS; ++j)
        {
            if (j == i)
            {
                continue;
            }
            if (Spec::kFIELD_TYPES[j] == PluginFieldType::kINT32)
            {
                missing.addInt(Spec::kFIELD_NAMES[j], 64);
            }
            else
            {
                missing.addFloat(Spec::kFIELD_NAMES[j], 0.1F);
            }
        }
        check(creator->createPlugin(op.c_str(), missing.collection(), TensorRTPhase::kBUILD) == nullptr,
            op + ": createPlugin refuses a missing " + Spec::kFIELD_NAMES[i]);
        if (Spec::kFIELD_TYPES[i] == PluginFieldType::kFLOAT32)
        {
            Fields zero = validFields<Spec>(64);
            float const z = 0.0F;
            std::memcpy(zero.data[i].data(), &z, sizeof(z));
            check(creator->createPlugin(op.c_str(), zero.collection(), TensorRTPhase::kBUILD) == nullptr,
                op + ": createPlugin refuses " + Spec::kFIELD_NAMES[i] + " = 0");
        }
    }
    Fields extra = validFields<Spec>(64);
    extra.addInt("not_a_field", 1);
    check(creator->createPlugin(op.c_str(), extra.collection(), TensorRTPhase::kBUILD) == nullptr,
        op + ": createPlugin refuses an unknown field");
}

//! getOutputShapes at constant dims: 0 and (b, l, N) when ``ok``, else non-zero.
template <class Spec>
void expectShapes(IPluginV3OneBuild* build, std::vector<Dims> const& dims, bool ok, std::string const& what)
{
    TestExprBuilder builder;
    std::vector<DimsExprs> in(Spec::kNB_INPUTS);
    for (int32_t i = 0; i < Spec::kNB_INPUTS; ++i)
    {
        in[i].nbDims = dims[i].nbDims;
        for (int32_t j = 0; j < dims[i].nbDims; ++j)
        {
            in[i].d[j] = builder.constant(dims[i].d[j]);
        }
    }
    DimsExprs out{};
    int32_t const rc = build->getOutputShapes(in.data(), Spec::kNB_INPUTS, nullptr, 0, &out, 1, builder);
    if (!ok)
    {
        check(rc != 0, what + ": getOutputShapes refuses");
        return;
    }
    Dims const& y = dims[Spec::kNB_INPUTS];
    bool same = rc == 0 && out.nbDims == 3;
    for (int32_t j = 0; same && j < 3; ++j)
    {
        same = out.d[j]->isConstant() && out.d[j]->getConstantValue() == y.d[j];
    }
    check(same, what + ": getOutputShapes gives (b, l, N)");
}

template <class Spec>
void selftestShapes(IPluginV3OneBuild* build, std::string const& op)
{
    // group_size 64 (the plugin under test): the 2.8b in_proj, x_proj, dt_proj (a partial last group), out_proj.
    expectShapes<Spec>(build, linearDims(2, 5, 2560, 10240, 40), true, op + " in_proj");
    expectShapes<Spec>(build, linearDims(1, 1, 5120, 192, 80), true, op + " x_proj");
    expectShapes<Spec>(build, linearDims(1, 7, 160, 5120, 3), true, op + " dt_proj (partial group)");
    expectShapes<Spec>(build, linearDims(1, 1, 39, 17, 1), true, op + " odd K below the group");
    std::vector<Dims> badPacked = linearDims(1, 1, 2560, 64, 40);
    badPacked[1] = makeDims({64, 1279});
    expectShapes<Spec>(build, badPacked, false, op + " weight_packed width != ceil(K / 2)");
    expectShapes<Spec>(build, linearDims(1, 1, 2560, 64, 20), false, op + " groups != ceil(K / 64)");
    std::vector<Dims> badN = linearDims(1, 1, 256, 64, 4);
    badN[3] = makeDims({65});
    expectShapes<Spec>(build, badN, false, op + " bias length != N");
    expectShapes<Spec>(build, linearDims(1, 1, 131072 + 64, 8, 2049), false, op + " K > 131071");
    std::vector<Dims> rank = linearDims(1, 1, 256, 64, 4);
    rank[0] = makeDims({1, 256});
    expectShapes<Spec>(build, rank, false, op + " x of rank 2");

    // Runtime b and l (dynamic axes): the output's first two dims are the input's expressions, N is constant.
    TestExprBuilder builder;
    std::vector<Dims> dims = linearDims(1, 1, 5120, 2560, 80);
    std::vector<DimsExprs> in(Spec::kNB_INPUTS);
    for (int32_t i = 0; i < Spec::kNB_INPUTS; ++i)
    {
        in[i].nbDims = dims[i].nbDims;
        for (int32_t j = 0; j < dims[i].nbDims; ++j)
        {
            in[i].d[j] = i == 0 && j < 2 ? builder.symbol() : builder.constant(dims[i].d[j]);
        }
    }
    DimsExprs out{};
    bool ok = build->getOutputShapes(in.data(), Spec::kNB_INPUTS, nullptr, 0, &out, 1, builder) == 0;
    check(ok && out.nbDims == 3 && out.d[0] == in[0].d[0] && out.d[1] == in[0].d[1] && out.d[2]->isConstant()
            && out.d[2]->getConstantValue() == 2560,
        op + ": getOutputShapes passes runtime b, l through and takes N from weight_packed");
}

//! A desc per input and output at (b, l) with the spec's dtypes; min/max of b in [1, 2], l in [1, 64].
template <class Spec>
std::vector<DynamicPluginTensorDesc> dynamicDescs(int64_t k, int64_t n, int64_t groups)
{
    std::vector<Dims> dims = linearDims(1, 3, k, n, groups);
    std::vector<DynamicPluginTensorDesc> io(dims.size());
    for (size_t i = 0; i < dims.size(); ++i)
    {
        bool const input = static_cast<int32_t>(i) < Spec::kNB_INPUTS;
        io[i].desc.type = input ? Spec::kINPUT_TYPES[i] : Spec::kOUTPUT_TYPES[i - Spec::kNB_INPUTS];
        io[i].desc.format = TensorFormat::kLINEAR;
        io[i].desc.dims = dims[i];
        io[i].min = dims[i];
        io[i].max = dims[i];
        bool const activation = i == 0 || static_cast<int32_t>(i) == Spec::kNB_INPUTS;
        if (activation)
        {
            io[i].desc.dims.d[0] = io[i].desc.dims.d[1] = -1;
            io[i].min.d[0] = io[i].min.d[1] = 1;
            io[i].max.d[0] = 2;
            io[i].max.d[1] = 64;
        }
    }
    return io;
}

template <class Spec>
void selftestFormatsAndConfigure(IPluginV3OneBuild* build, IPluginV3OneRuntime* runtime, std::string const& op)
{
    std::vector<DynamicPluginTensorDesc> io = dynamicDescs<Spec>(256, 64, 4);
    int32_t const nbIO = Spec::kNB_INPUTS + 1;
    for (int32_t pos = 0; pos < nbIO; ++pos)
    {
        check(build->supportsFormatCombination(pos, io.data(), Spec::kNB_INPUTS, 1),
            op + ": accepts the spec dtype at position " + std::to_string(pos));
        DataType const want = io[pos].desc.type;
        for (DataType other : {DataType::kFLOAT, DataType::kHALF, DataType::kINT8, DataType::kINT32})
        {
            if (other == want)
            {
                continue;
            }
            io[pos].desc.type = other;
            check(!build->supportsFormatCombination(pos, io.data(), Spec::kNB_INPUTS, 1),
                op + ": refuses another dtype at position " + std::to_string(pos));
        }
        io[pos].desc.type = want;
        io[pos].desc.format = TensorFormat::kCHW32;
        check(!build->supportsFormatCombination(pos, io.data(), Spec::kNB_INPUTS, 1),
            op + ": refuses a non-linear format at position " + std::to_string(pos));
        io[pos].desc.format = TensorFormat::kLINEAR;
    }
    DataType inTypes[Spec::kNB_INPUTS];
    std::copy(Spec::kINPUT_TYPES, Spec::kINPUT_TYPES + Spec::kNB_INPUTS, inTypes);
    DataType outType = DataType::kBOOL;
    check(build->getOutputDataTypes(&outType, 1, inTypes, Spec::kNB_INPUTS) == 0 && outType == Spec::kOUTPUT_TYPES[0],
        op + ": output data type");
    inTypes[0] = inTypes[0] == DataType::kHALF ? DataType::kFLOAT : DataType::kHALF;
    check(build->getOutputDataTypes(&outType, 1, inTypes, Spec::kNB_INPUTS) != 0,
        op + ": getOutputDataTypes refuses another activation dtype");

    check(build->configurePlugin(io.data(), Spec::kNB_INPUTS, &io[Spec::kNB_INPUTS], 1) == 0,
        op + ": configurePlugin with dynamic b, l");
    std::vector<DynamicPluginTensorDesc> wrong = dynamicDescs<Spec>(256, 64, 8); // 8 groups: not ceil(256 / 64)
    check(build->configurePlugin(wrong.data(), Spec::kNB_INPUTS, &wrong[Spec::kNB_INPUTS], 1) != 0,
        op + ": configurePlugin refuses a scale width that does not fit K and group_size");

    std::vector<PluginTensorDesc> desc(nbIO);
    std::vector<Dims> dims = linearDims(2, 7, 256, 64, 4);
    for (int32_t i = 0; i < nbIO; ++i)
    {
        desc[i] = io[i].desc;
        desc[i].dims = dims[i];
    }
    check(runtime->onShapeChange(desc.data(), Spec::kNB_INPUTS, &desc[Spec::kNB_INPUTS], 1) == 0,
        op + ": onShapeChange at (2, 7)");
    desc[Spec::kNB_INPUTS].dims.d[2] = 65;
    check(runtime->onShapeChange(desc.data(), Spec::kNB_INPUTS, &desc[Spec::kNB_INPUTS], 1) != 0,
        op + ": onShapeChange refuses an output width other than N");
    desc[Spec::kNB_INPUTS].dims.d[2] = 64;
    desc[2].type = DataType::kHALF;
    check(runtime->onShapeChange(desc.data(), Spec::kNB_INPUTS, &desc[Spec::kNB_INPUTS], 1) != 0,
        op + ": onShapeChange refuses an fp16 weight_scale");
}

template <class Spec>
void selftestOne()
{
    std::string const op = Spec::kNAME;
    IPluginCreatorV3One* creator = test::checkedCreator<Spec>();
    if (creator == nullptr)
    {
        return;
    }

    Fields fields = validFields<Spec>(64);
    IPluginV3* plugin = creator->createPlugin(op.c_str(), fields.collection(), TensorRTPhase::kBUILD);
    check(plugin != nullptr, op + ": createPlugin accepts valid fields");
    if (plugin == nullptr)
    {
        return;
    }
    Capabilities cap = capabilities(plugin);
    check(cap.core != nullptr && cap.build != nullptr && cap.runtime != nullptr, op + ": all three capabilities");
    check(std::string(cap.core->getPluginName()) == op, op + ": core name");

    test::checkRoundTripCloneAttach<Spec>(creator, plugin, fields, op);

    selftestShapes<Spec>(cap.build, op);
    selftestFormatsAndConfigure<Spec>(cap.build, cap.runtime, op);
    delete plugin;

    // Too many groups: group_size 1 at K = 8192 (8192 groups > kernels::kInt4MaxGroups = 6144).
    Fields tiny = validFields<Spec>(1);
    IPluginV3* small = creator->createPlugin(op.c_str(), tiny.collection(), TensorRTPhase::kBUILD);
    check(small != nullptr, op + ": createPlugin accepts group_size 1");
    if (small != nullptr)
    {
        expectShapes<Spec>(capabilities(small).build, linearDims(1, 1, 8192, 8, 8192), false,
            op + " 8192 groups per row");
        expectShapes<Spec>(capabilities(small).build, linearDims(1, 1, 6144, 8, 6144), true,
            op + " 6144 groups per row");
        delete small;
    }
    selftestCreateValidation<Spec>(creator, op);
}

//! SelectiveScanF16 at (b, l, d_in, n): inputs u, delta, A, B, C, D, ssm_state; outputs y, ssm_state_out.
std::vector<Dims> scanDims(int64_t b, int64_t l, int64_t d, int64_t n)
{
    return {makeDims({b, l, d}), makeDims({b, l, d}), makeDims({d, n}), makeDims({b, l, n}), makeDims({b, l, n}),
        makeDims({d}), makeDims({b, d, n}), makeDims({b, l, d}), makeDims({b, d, n})};
}

//! getOutputShapes of the scan at constant dims: 0 and the spec's output dims when ``ok``, else non-zero.
void expectScanShapes(IPluginV3OneBuild* build, std::vector<Dims> const& dims, bool ok, std::string const& what)
{
    using Spec = spec::SelectiveScanF16;
    TestExprBuilder builder;
    std::vector<DimsExprs> in(Spec::kNB_INPUTS), out(Spec::kNB_OUTPUTS);
    for (int32_t i = 0; i < Spec::kNB_INPUTS; ++i)
    {
        in[i].nbDims = dims[i].nbDims;
        for (int32_t j = 0; j < dims[i].nbDims; ++j)
        {
            in[i].d[j] = builder.constant(dims[i].d[j]);
        }
    }
    int32_t const rc
        = build->getOutputShapes(in.data(), Spec::kNB_INPUTS, nullptr, 0, out.data(), Spec::kNB_OUTPUTS, builder);
    if (!ok)
    {
        check(rc != 0, what + ": getOutputShapes refuses");
        return;
    }
    bool same = rc == 0;
    for (int32_t o = 0; same && o < Spec::kNB_OUTPUTS; ++o)
    {
        Dims const& want = dims[Spec::kNB_INPUTS + o];
        same = out[o].nbDims == want.nbDims;
        for (int32_t j = 0; same && j < want.nbDims; ++j)
        {
            same = out[o].d[j]->isConstant() && out[o].d[j]->getConstantValue() == want.d[j];
        }
    }
    check(same, what + ": getOutputShapes gives y (b, l, d_in) and ssm_state_out (b, d_in, n)");
}

void selftestScan()
{
    using Spec = spec::SelectiveScanF16;
    std::string const op = Spec::kNAME;
    IPluginCreatorV3One* creator = findCreator(op);
    check(creator != nullptr, op + ": getCreators lists a V3One creator");
    if (creator == nullptr)
    {
        return;
    }
    check(creator->getFieldNames() != nullptr && creator->getFieldNames()->nbFields == 0, op + ": declares no field");
    Fields none;
    IPluginV3* plugin = creator->createPlugin(op.c_str(), none.collection(), TensorRTPhase::kBUILD);
    check(plugin != nullptr, op + ": createPlugin accepts no fields");
    Fields extra;
    extra.addFloat("u_scale", 0.1F);
    check(creator->createPlugin(op.c_str(), extra.collection(), TensorRTPhase::kBUILD) == nullptr,
        op + ": createPlugin refuses a field");
    if (plugin == nullptr)
    {
        return;
    }
    Capabilities cap = capabilities(plugin);
    IPluginV3* restored
        = creator->createPlugin(op.c_str(), cap.runtime->getFieldsToSerialize(), TensorRTPhase::kRUNTIME);
    check(restored != nullptr && cap.runtime->getFieldsToSerialize()->nbFields == 0,
        op + ": serialization round trip (no fields)");
    delete restored;
    expectScanShapes(cap.build, scanDims(2, 5, 5120, 16), true, op + " d_in 5120, n 16");
    expectScanShapes(cap.build, scanDims(1, 1, 768, 32), true, op + " n 32");
    expectScanShapes(cap.build, scanDims(1, 1, 768, 24), false, op + " n 24 (not a power of two)");
    expectScanShapes(cap.build, scanDims(1, 1, 768, 64), false, op + " n 64");
    expectScanShapes(cap.build, scanDims(70000, 1, 64, 16), false, op + " b 70000");
    std::vector<Dims> wrongD = scanDims(1, 3, 768, 16);
    wrongD[5] = makeDims({767});
    expectScanShapes(cap.build, wrongD, false, op + " D of another d_in");

    std::vector<Dims> dims = scanDims(1, 3, 64, 16);
    int32_t const nbIO = Spec::kNB_INPUTS + Spec::kNB_OUTPUTS;
    std::vector<DynamicPluginTensorDesc> io(nbIO);
    std::vector<PluginTensorDesc> desc(nbIO);
    for (int32_t k = 0; k < nbIO; ++k)
    {
        io[k].desc.type = k < Spec::kNB_INPUTS ? Spec::kINPUT_TYPES[k] : Spec::kOUTPUT_TYPES[k - Spec::kNB_INPUTS];
        io[k].desc.format = TensorFormat::kLINEAR;
        io[k].desc.dims = io[k].min = io[k].max = dims[k];
        desc[k] = io[k].desc;
    }
    for (int32_t pos = 0; pos < nbIO; ++pos)
    {
        DataType const want = io[pos].desc.type;
        check(cap.build->supportsFormatCombination(pos, io.data(), Spec::kNB_INPUTS, Spec::kNB_OUTPUTS),
            op + ": accepts the spec dtype at position " + std::to_string(pos));
        io[pos].desc.type = want == DataType::kHALF ? DataType::kFLOAT : DataType::kHALF;
        check(!cap.build->supportsFormatCombination(pos, io.data(), Spec::kNB_INPUTS, Spec::kNB_OUTPUTS),
            op + ": refuses another float type at position " + std::to_string(pos));
        io[pos].desc.type = want;
    }
    check(cap.build->configurePlugin(io.data(), Spec::kNB_INPUTS, &io[Spec::kNB_INPUTS], Spec::kNB_OUTPUTS) == 0,
        op + ": configurePlugin");
    check(cap.runtime->onShapeChange(desc.data(), Spec::kNB_INPUTS, &desc[Spec::kNB_INPUTS], Spec::kNB_OUTPUTS) == 0,
        op + ": onShapeChange");
    desc[0].type = DataType::kFLOAT;
    check(cap.runtime->onShapeChange(desc.data(), Spec::kNB_INPUTS, &desc[Spec::kNB_INPUTS], Spec::kNB_OUTPUTS) != 0,
        op + ": onShapeChange refuses a float32 u");
    delete plugin;
}

} // namespace

int selftest()
{
    std::printf("(the refused cases below log their one-line errors on stderr)\n");
    selftestOne<spec::W4A8Linear>();
    selftestOne<spec::W4A8LinearQuantize>();
    selftestOne<spec::W4A16Linear>();
    selftestScan();
    std::printf("selftest: %d checks, %d failed\n", checkCount(), failureCount());
    return failureCount() == 0 ? 0 : 1;
}


} // namespace w4test
} // namespace trt
} // namespace edge_quamba
