// TEST ONLY: `harness selftest` (every interface method of every plugin, on the host: no GPU needed) and
// `harness describe` (what the creators and plugins declare, as JSON; tests compare it with the op specs).
#include "harness.h"
#include "selftestCommon.h"

#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

namespace edge_quamba
{
namespace trt
{
namespace test
{
namespace
{
using namespace nvinfer1;

// ---- selftest -------------------------------------------------------------------------------------------------

//! Sizes used for the shape checks: d_in = 768 (demo model, 12 * 64: a supported Hadamard size), n = 16, k = 4;
//! Mamba2's h = 12 heads of p = 64 channels (h p = d_in), g = 2 state groups (gn = 32), conv_dim = d_in + 2 g n = 832.
//! The 4-bit linears' symbols are w4Selftest.cpp's (they get 0 here and are never used).
int64_t exampleSize(int32_t symbol)
{
    switch (symbol)
    {
    case spec::kSYM_B: return 2;
    case spec::kSYM_L: return 5;
    case spec::kSYM_D_IN: return 768;
    case spec::kSYM_K: return 4;
    case spec::kSYM_N: return 16;
    case spec::kSYM_CONV_DIM: return 832;
    case spec::kSYM_H: return 12;
    case spec::kSYM_P: return 64;
    case spec::kSYM_GN: return 32;
    default: return 0;
    }
}

//! The value of every kINT32 field in these checks: the gated norm's group_size, d_in / 2 (ngroups 2).
constexpr int32_t kExampleIntField = 384;

//! One size per op that its kernel cannot run (the plugin must refuse it at build time).
template <class Spec>
std::pair<int32_t, int64_t> unsupportedSize();
template <>
std::pair<int32_t, int64_t> unsupportedSize<spec::Int8CausalConv1d>()
{
    return {spec::kSYM_K, 5};
}
template <>
std::pair<int32_t, int64_t> unsupportedSize<spec::Int8SelectiveScan>()
{
    return {spec::kSYM_N, 24};
}
template <>
std::pair<int32_t, int64_t> unsupportedSize<spec::HadamardQuantize>()
{
    return {spec::kSYM_D_IN, 100};
}
template <>
std::pair<int32_t, int64_t> unsupportedSize<spec::Int8CausalConv1dChannelScales>()
{
    return {spec::kSYM_K, 5};
}
template <>
std::pair<int32_t, int64_t> unsupportedSize<spec::Int8SSDScan>()
{
    return {spec::kSYM_N, 512};
}
template <>
std::pair<int32_t, int64_t> unsupportedSize<spec::GatedRMSNormQuantize>()
{
    return {spec::kSYM_D_IN, 100}; // not a whole number of groups of 384
}
template <>
std::pair<int32_t, int64_t> unsupportedSize<spec::GatedRMSNormHadamardQuantize>()
{
    return {spec::kSYM_D_IN, 1152}; // 3 groups of 384, but 9 * 2^7: no Hadamard transform of that size
}

//! The spec's dims of every input (or output) at exampleSize, with ``overrides`` (symbol, value) applied.
template <class Spec>
std::vector<Dims> specDimsWith(bool inputs, std::vector<std::pair<int32_t, int64_t>> const& overrides)
{
    int32_t const n = inputs ? Spec::kNB_INPUTS : Spec::kNB_OUTPUTS;
    std::vector<Dims> all;
    for (int32_t i = 0; i < n; ++i)
    {
        int32_t const rank = inputs ? Spec::kINPUT_RANKS[i] : Spec::kOUTPUT_RANKS[i];
        std::vector<int64_t> d;
        for (int32_t j = 0; j < rank; ++j)
        {
            int32_t const s = inputs ? Spec::kINPUT_DIMS[i][j] : Spec::kOUTPUT_DIMS[i][j];
            int64_t value = exampleSize(s);
            for (auto const& [symbol, v] : overrides)
            {
                value = symbol == s ? v : value;
            }
            d.push_back(value);
        }
        all.push_back(makeDims(d));
    }
    return all;
}

template <class Spec>
std::vector<Dims> specDims(bool inputs, int32_t overrideSymbol = -1, int64_t overrideValue = 0)
{
    return specDimsWith<Spec>(inputs, {{overrideSymbol, overrideValue}});
}

template <class Spec>
bool isIntField(int32_t i)
{
    return Spec::kFIELD_TYPES[i] == PluginFieldType::kINT32;
}

//! Field i at a valid value of its type (a kFLOAT32 scale ``scale``, or kExampleIntField).
template <class Spec>
void addValid(Fields& f, int32_t i, float scale)
{
    if (isIntField<Spec>(i))
    {
        f.addRaw(Spec::kFIELD_NAMES[i], &kExampleIntField, sizeof(int32_t), PluginFieldType::kINT32, 1);
    }
    else
    {
        f.addFloat(Spec::kFIELD_NAMES[i], scale);
    }
}

template <class Spec>
Fields validFields()
{
    Fields f;
    for (int32_t i = 0; i < Spec::kNB_FIELDS; ++i)
    {
        addValid<Spec>(f, i, 0.01F * static_cast<float>(i + 1) + 0.003F);
    }
    return f;
}

template <class Spec>
void selftestCreateValidation(IPluginCreatorV3One* creator, std::string const& op)
{
    auto refused = [&](Fields& f, std::string const& why) {
        IPluginV3* p = creator->createPlugin(op.c_str(), f.collection(), TensorRTPhase::kBUILD);
        check(p == nullptr, op + ": createPlugin refuses " + why);
        delete p;
    };
    check(creator->createPlugin(op.c_str(), nullptr, TensorRTPhase::kBUILD) == nullptr,
        op + ": createPlugin refuses a null field collection");
    float const bad[] = {0.0F, -0.5F, NAN, INFINITY};
    char const* badNames[] = {"zero", "negative", "NaN", "Inf"};
    int32_t const badInts[] = {0, -1};
    for (int32_t i = 0; i < Spec::kNB_FIELDS; ++i)
    {
        std::string const name = Spec::kFIELD_NAMES[i];
        bool const isInt = isIntField<Spec>(i);
        for (int b = 0; b < (isInt ? 2 : 4); ++b)
        {
            Fields f;
            for (int32_t j = 0; j < Spec::kNB_FIELDS; ++j)
            {
                if (j != i)
                {
                    addValid<Spec>(f, j, 0.1F);
                }
                else if (isInt)
                {
                    f.addRaw(name, &badInts[b], sizeof(int32_t), PluginFieldType::kINT32, 1);
                }
                else
                {
                    f.addFloat(name, bad[b]);
                }
            }
            refused(f, std::string("a ") + (isInt ? std::to_string(badInts[b]) : badNames[b]) + " " + name);
        }
        Fields missing;
        for (int32_t j = 0; j < Spec::kNB_FIELDS; ++j)
        {
            if (j != i)
            {
                addValid<Spec>(missing, j, 0.1F);
            }
        }
        refused(missing, "a missing " + name);
        Fields wrongType = missing;
        double const d = 0.1;
        wrongType.addRaw(name, &d, sizeof(d), PluginFieldType::kFLOAT64, 1);
        refused(wrongType, name + " as kFLOAT64");
        Fields otherType = missing; // a scale given as kINT32, or a layout constant as kFLOAT32
        int32_t const one = 1;
        float const oneF = 1.0F;
        otherType.addRaw(name, isInt ? static_cast<void const*>(&oneF) : static_cast<void const*>(&one), 4,
            isInt ? PluginFieldType::kFLOAT32 : PluginFieldType::kINT32, 1);
        refused(otherType, name + (isInt ? " as kFLOAT32" : " as kINT32"));
        Fields twoValues = missing;
        float const two[2] = {0.1F, 0.2F};
        twoValues.addRaw(name, two, sizeof(two), Spec::kFIELD_TYPES[i], 2);
        refused(twoValues, name + " of length 2");
    }
    Fields extra = validFields<Spec>();
    extra.addFloat("not_a_field", 0.1F);
    refused(extra, "an unknown field");
    Fields twice = validFields<Spec>();
    addValid<Spec>(twice, 0, 0.1F);
    refused(twice, "a field given twice");
}

template <class Spec>
void selftestShapes(IPluginV3OneBuild* build, std::string const& op)
{
    TestExprBuilder builder;
    auto exprsOf = [&](std::vector<Dims> const& dims, bool symbolicBatchSeq) {
        std::vector<DimsExprs> exprs(dims.size());
        for (size_t i = 0; i < dims.size(); ++i)
        {
            exprs[i].nbDims = dims[i].nbDims;
            for (int32_t j = 0; j < dims[i].nbDims; ++j)
            {
                int32_t const s = Spec::kINPUT_DIMS[i][j];
                bool const runtime = symbolicBatchSeq && (s == spec::kSYM_B || s == spec::kSYM_L);
                exprs[i].d[j] = runtime ? builder.symbol() : builder.constant(dims[i].d[j]);
            }
        }
        return exprs;
    };
    for (bool symbolic : {false, true})
    {
        std::vector<DimsExprs> in = exprsOf(specDims<Spec>(true), symbolic);
        std::vector<DimsExprs> out(Spec::kNB_OUTPUTS);
        int32_t const rc = build->getOutputShapes(
            in.data(), Spec::kNB_INPUTS, nullptr, 0, out.data(), Spec::kNB_OUTPUTS, builder);
        std::string const mode = symbolic ? " (runtime b, l)" : " (constants)";
        check(rc == 0, op + ": getOutputShapes succeeds" + mode);
        for (int32_t o = 0; rc == 0 && o < Spec::kNB_OUTPUTS; ++o)
        {
            check(out[o].nbDims == Spec::kOUTPUT_RANKS[o], op + ": output rank" + mode);
            for (int32_t j = 0; j < out[o].nbDims; ++j)
            {
                check(out[o].d[j] == in[Spec::kOUTPUT_SHAPE_SOURCE[o]].d[j],
                    op + ": output " + Spec::kOUTPUT_NAMES[o] + " dim " + std::to_string(j)
                        + " is the matching input's expression" + mode);
            }
        }
    }
    // Inconsistent constants: the last input's first dim disagrees with its symbol elsewhere, when that symbol
    // appears in another input.
    {
        std::vector<Dims> dims = specDims<Spec>(true);
        int32_t const last = Spec::kNB_INPUTS - 1;
        dims[last].d[0] += 1;
        std::vector<DimsExprs> in = exprsOf(dims, false);
        std::vector<DimsExprs> out(Spec::kNB_OUTPUTS);
        int32_t const rc = build->getOutputShapes(
            in.data(), Spec::kNB_INPUTS, nullptr, 0, out.data(), Spec::kNB_OUTPUTS, builder);
        if (Spec::kNB_INPUTS > 1)
        {
            check(rc != 0, op + ": getOutputShapes refuses inconsistent dims");
        }
    }
    {
        auto const bad = unsupportedSize<Spec>();
        std::vector<DimsExprs> in = exprsOf(specDims<Spec>(true, bad.first, bad.second), false);
        std::vector<DimsExprs> out(Spec::kNB_OUTPUTS);
        check(build->getOutputShapes(in.data(), Spec::kNB_INPUTS, nullptr, 0, out.data(), Spec::kNB_OUTPUTS, builder)
                != 0,
            op + ": getOutputShapes refuses " + spec::kSYMBOL_NAMES[bad.first] + " = " + std::to_string(bad.second));
    }
    {
        std::vector<DimsExprs> in = exprsOf(specDims<Spec>(true), false);
        in[0].nbDims -= 1;
        std::vector<DimsExprs> out(Spec::kNB_OUTPUTS);
        check(build->getOutputShapes(in.data(), Spec::kNB_INPUTS, nullptr, 0, out.data(), Spec::kNB_OUTPUTS, builder)
                != 0,
            op + ": getOutputShapes refuses a wrong rank");
    }
}

template <class Spec>
std::vector<DynamicPluginTensorDesc> dynamicDescs(bool inputs, std::vector<Dims> const& dims)
{
    std::vector<DynamicPluginTensorDesc> descs(dims.size());
    for (size_t i = 0; i < dims.size(); ++i)
    {
        DynamicPluginTensorDesc& d = descs[i];
        d.desc.type = inputs ? Spec::kINPUT_TYPES[i] : Spec::kOUTPUT_TYPES[i];
        d.desc.format = TensorFormat::kLINEAR;
        d.desc.dims = dims[i];
        d.min = dims[i];
        d.max = dims[i];
        d.opt = dims[i];
        for (int32_t j = 0; j < dims[i].nbDims; ++j)
        {
            int32_t const s = inputs ? Spec::kINPUT_DIMS[i][j] : Spec::kOUTPUT_DIMS[i][j];
            if (s == spec::kSYM_B || s == spec::kSYM_L)
            {
                d.desc.dims.d[j] = -1; // dynamic at build time: decode l = 1 .. prefill l = 64
                d.min.d[j] = 1;
                d.max.d[j] = s == spec::kSYM_L ? 64 : 2;
            }
        }
    }
    return descs;
}

template <class Spec>
void selftestFormatsAndConfigure(IPluginV3OneBuild* build, IPluginV3OneRuntime* runtime, std::string const& op)
{
    int32_t const nbIO = Spec::kNB_INPUTS + Spec::kNB_OUTPUTS;
    std::vector<DynamicPluginTensorDesc> io = dynamicDescs<Spec>(true, specDims<Spec>(true));
    std::vector<DynamicPluginTensorDesc> outs = dynamicDescs<Spec>(false, specDims<Spec>(false));
    io.insert(io.end(), outs.begin(), outs.end());
    for (int32_t pos = 0; pos < nbIO; ++pos)
    {
        std::string const where = op + ": supportsFormatCombination pos " + std::to_string(pos);
        check(build->supportsFormatCombination(pos, io.data(), Spec::kNB_INPUTS, Spec::kNB_OUTPUTS),
            where + " accepts the spec's type, linear");
        DynamicPluginTensorDesc saved = io[pos];
        for (DataType other : {DataType::kFLOAT, DataType::kHALF, DataType::kINT8, DataType::kINT32})
        {
            if (other == saved.desc.type)
            {
                continue;
            }
            io[pos].desc.type = other;
            check(!build->supportsFormatCombination(pos, io.data(), Spec::kNB_INPUTS, Spec::kNB_OUTPUTS),
                where + " refuses data type " + std::to_string(static_cast<int>(other)));
        }
        io[pos] = saved;
        io[pos].desc.format = TensorFormat::kCHW32;
        check(!build->supportsFormatCombination(pos, io.data(), Spec::kNB_INPUTS, Spec::kNB_OUTPUTS),
            where + " refuses kCHW32");
        io[pos] = saved;
    }
    check(!build->supportsFormatCombination(nbIO, io.data(), Spec::kNB_INPUTS, Spec::kNB_OUTPUTS),
        op + ": supportsFormatCombination refuses a position past the outputs");

    std::vector<DataType> inTypes(Spec::kINPUT_TYPES, Spec::kINPUT_TYPES + Spec::kNB_INPUTS);
    std::vector<DataType> outTypes(Spec::kNB_OUTPUTS, DataType::kBOOL);
    check(build->getOutputDataTypes(outTypes.data(), Spec::kNB_OUTPUTS, inTypes.data(), Spec::kNB_INPUTS) == 0,
        op + ": getOutputDataTypes succeeds");
    for (int32_t o = 0; o < Spec::kNB_OUTPUTS; ++o)
    {
        check(outTypes[o] == Spec::kOUTPUT_TYPES[o], op + ": output data type of " + Spec::kOUTPUT_NAMES[o]);
    }
    inTypes[0] = DataType::kHALF;
    check(build->getOutputDataTypes(outTypes.data(), Spec::kNB_OUTPUTS, inTypes.data(), Spec::kNB_INPUTS) != 0,
        op + ": getOutputDataTypes refuses a wrong input type");
    check(build->getNbOutputs() == Spec::kNB_OUTPUTS, op + ": getNbOutputs");

    std::vector<DynamicPluginTensorDesc> in = dynamicDescs<Spec>(true, specDims<Spec>(true));
    check(build->configurePlugin(in.data(), Spec::kNB_INPUTS, outs.data(), Spec::kNB_OUTPUTS) == 0,
        op + ": configurePlugin accepts the spec shapes with dynamic b, l");
    auto const bad = unsupportedSize<Spec>();
    std::vector<DynamicPluginTensorDesc> badIn = dynamicDescs<Spec>(true, specDims<Spec>(true, bad.first, bad.second));
    std::vector<DynamicPluginTensorDesc> badOut
        = dynamicDescs<Spec>(false, specDims<Spec>(false, bad.first, bad.second));
    check(build->configurePlugin(badIn.data(), Spec::kNB_INPUTS, badOut.data(), Spec::kNB_OUTPUTS) != 0,
        op + ": configurePlugin refuses an unsupported " + spec::kSYMBOL_NAMES[bad.first]);
    if (Spec::kNB_INPUTS > 1)
    {
        std::vector<DynamicPluginTensorDesc> mismatch = in;
        mismatch.back().desc.dims.d[0] += 1;
        mismatch.back().min.d[0] += 1;
        mismatch.back().max.d[0] += 1;
        check(build->configurePlugin(mismatch.data(), Spec::kNB_INPUTS, outs.data(), Spec::kNB_OUTPUTS) != 0,
            op + ": configurePlugin refuses inconsistent dims");
    }

    std::vector<PluginTensorDesc> rin(Spec::kNB_INPUTS);
    std::vector<PluginTensorDesc> rout(Spec::kNB_OUTPUTS);
    std::vector<Dims> inDims = specDims<Spec>(true);
    std::vector<Dims> outDims = specDims<Spec>(false);
    for (int32_t i = 0; i < Spec::kNB_INPUTS; ++i)
    {
        rin[i] = PluginTensorDesc{inDims[i], Spec::kINPUT_TYPES[i], TensorFormat::kLINEAR, 1.0F};
    }
    for (int32_t o = 0; o < Spec::kNB_OUTPUTS; ++o)
    {
        rout[o] = PluginTensorDesc{outDims[o], Spec::kOUTPUT_TYPES[o], TensorFormat::kLINEAR, 1.0F};
    }
    check(runtime->onShapeChange(rin.data(), Spec::kNB_INPUTS, rout.data(), Spec::kNB_OUTPUTS) == 0,
        op + ": onShapeChange accepts the spec shapes");
    rout[0].dims.d[rout[0].dims.nbDims - 1] += 1;
    check(runtime->onShapeChange(rin.data(), Spec::kNB_INPUTS, rout.data(), Spec::kNB_OUTPUTS) != 0,
        op + ": onShapeChange refuses an output that disagrees with the inputs");
    rout[0].dims = outDims[0];
    rin[0].type = DataType::kINT32;
    check(runtime->onShapeChange(rin.data(), Spec::kNB_INPUTS, rout.data(), Spec::kNB_OUTPUTS) != 0,
        op + ": onShapeChange refuses a wrong input type");
}

//! A profile's DynamicPluginTensorDescs: b and l are -1 in desc.dims, min/opt/max from the profile; d_in, n, k are
//! the example sizes.
template <class Spec>
std::vector<DynamicPluginTensorDesc> profileDescs(bool inputs, std::array<int64_t, 3> b, std::array<int64_t, 3> l)
{
    std::vector<Dims> const mins = specDimsWith<Spec>(inputs, {{spec::kSYM_B, b[0]}, {spec::kSYM_L, l[0]}});
    std::vector<Dims> const opts = specDimsWith<Spec>(inputs, {{spec::kSYM_B, b[1]}, {spec::kSYM_L, l[1]}});
    std::vector<Dims> const maxs = specDimsWith<Spec>(inputs, {{spec::kSYM_B, b[2]}, {spec::kSYM_L, l[2]}});
    std::vector<DynamicPluginTensorDesc> descs(mins.size());
    for (size_t i = 0; i < descs.size(); ++i)
    {
        descs[i].desc.type = inputs ? Spec::kINPUT_TYPES[i] : Spec::kOUTPUT_TYPES[i];
        descs[i].desc.format = TensorFormat::kLINEAR;
        descs[i].desc.dims = opts[i];
        for (int32_t j = 0; j < opts[i].nbDims; ++j)
        {
            int32_t const s = inputs ? Spec::kINPUT_DIMS[i][j] : Spec::kOUTPUT_DIMS[i][j];
            descs[i].desc.dims.d[j] = s == spec::kSYM_B || s == spec::kSYM_L ? -1 : opts[i].d[j];
        }
        descs[i].min = mins[i];
        descs[i].opt = opts[i];
        descs[i].max = maxs[i];
    }
    return descs;
}

//! The runtime descs of every input and output at batch b, length l.
template <class Spec>
std::pair<std::vector<PluginTensorDesc>, std::vector<PluginTensorDesc>> shapeDescs(int64_t b, int64_t l)
{
    std::vector<Dims> const inDims = specDimsWith<Spec>(true, {{spec::kSYM_B, b}, {spec::kSYM_L, l}});
    std::vector<Dims> const outDims = specDimsWith<Spec>(false, {{spec::kSYM_B, b}, {spec::kSYM_L, l}});
    std::vector<PluginTensorDesc> in(inDims.size()), out(outDims.size());
    for (size_t i = 0; i < in.size(); ++i)
    {
        in[i] = PluginTensorDesc{inDims[i], Spec::kINPUT_TYPES[i], TensorFormat::kLINEAR, 1.0F};
    }
    for (size_t o = 0; o < out.size(); ++o)
    {
        out[o] = PluginTensorDesc{outDims[o], Spec::kOUTPUT_TYPES[o], TensorFormat::kLINEAR, 1.0F};
    }
    return {in, out};
}

//! The host side of `harness run`'s call order (trtOrder.cpp), without case files: the builder's clone configured
//! with a profile (b 1/1/2, l 1/512/2048), the fields serialized and the build objects deleted, the runtime plugin
//! created from the copy, attached to a stub context, onShapeChange with l = 1, 7, 512, 2048, 7 on that one object;
//! a clone attached to another context; no configurePlugin on any runtime object.
template <class Spec>
void selftestTensorRTOrder(IPluginCreatorV3One* creator, std::string const& op)
{
    Fields fields = validFields<Spec>();
    IPluginV3* created = creator->createPlugin(op.c_str(), fields.collection(), TensorRTPhase::kBUILD);
    IPluginV3* layer = created != nullptr ? created->clone() : nullptr;
    delete created;
    check(layer != nullptr, op + ": order: the builder's clone of the created plugin");
    if (layer == nullptr)
    {
        return;
    }
    IPluginV3OneBuild* build = capabilities(layer).build;
    std::vector<DynamicPluginTensorDesc> in = profileDescs<Spec>(true, {1, 1, 2}, {1, 512, 2048});
    std::vector<DynamicPluginTensorDesc> out = profileDescs<Spec>(false, {1, 1, 2}, {1, 512, 2048});
    check(build->configurePlugin(in.data(), Spec::kNB_INPUTS, out.data(), Spec::kNB_OUTPUTS) == 0,
        op + ": order: configurePlugin with profile b 1/1/2, l 1/512/2048");
    check(build->getNbTactics() == 0, op + ": order: no custom tactics (TensorRT times the default one)");
    auto const opt = shapeDescs<Spec>(1, 512);
    check(capabilities(layer).runtime->onShapeChange(opt.first.data(), Spec::kNB_INPUTS, opt.second.data(),
              Spec::kNB_OUTPUTS)
            == 0,
        op + ": order: build-time onShapeChange at opt");
    Fields engine = Fields::copyOf(*capabilities(layer).runtime->getFieldsToSerialize());
    delete layer;

    IPluginV3* restored = creator->createPlugin(op.c_str(), engine.collection(), TensorRTPhase::kRUNTIME);
    check(restored != nullptr && capabilities(restored).core != nullptr && capabilities(restored).runtime != nullptr,
        op + ": order: createPlugin(kRUNTIME) from the copied fields, kCORE and kRUNTIME");
    if (restored == nullptr)
    {
        return;
    }
    StubResourceContext contextA;
    StubResourceContext contextB;
    IPluginV3* attached = capabilities(restored).runtime->attachToContext(&contextA);
    check(attached != nullptr && attached != restored, op + ": order: attachToContext returns a new object");
    if (attached != nullptr)
    {
        IPluginV3OneRuntime* runtime = capabilities(attached).runtime;
        check(runtime->setTactic(0) == 0, op + ": order: setTactic(0)");
        for (auto [b, l] : {std::pair<int64_t, int64_t>{1, 1}, {2, 7}, {1, 512}, {2, 2048}, {1, 7}})
        {
            auto const descs = shapeDescs<Spec>(b, l);
            check(runtime->onShapeChange(descs.first.data(), Spec::kNB_INPUTS, descs.second.data(),
                      Spec::kNB_OUTPUTS)
                    == 0,
                op + ": order: onShapeChange b " + std::to_string(b) + ", l " + std::to_string(l)
                    + " on the same attached plugin");
        }
        PluginFieldCollection const* kept = runtime->getFieldsToSerialize();
        bool same = kept != nullptr && kept->nbFields == Spec::kNB_FIELDS;
        for (int32_t f = 0; same && f < Spec::kNB_FIELDS; ++f)
        {
            same = std::memcmp(kept->fields[f].data, fields.data[f].data(), sizeof(float)) == 0;
        }
        check(same, op + ": order: the attached plugin keeps the fields bit for bit");
    }
    IPluginV3* copy = restored->clone();
    IPluginV3* second = copy != nullptr ? capabilities(copy).runtime->attachToContext(&contextB) : nullptr;
    delete copy;
    check(second != nullptr && second != attached, op + ": order: clone, then attachToContext on the clone");
    if (second != nullptr)
    {
        auto const decode = shapeDescs<Spec>(2, 1);
        check(capabilities(second).runtime->onShapeChange(decode.first.data(), Spec::kNB_INPUTS,
                  decode.second.data(), Spec::kNB_OUTPUTS)
                == 0,
            op + ": order: onShapeChange on the attached clone (its source deleted)");
    }
    check(contextA.requests() == 0 && contextB.requests() == 0,
        op + ": order: no plugin asks the context for resources (the stub has none)");
    delete second;
    delete attached;
    delete restored;
}

template <class Spec>
void selftestOne()
{
    std::string const op = Spec::kNAME;
    IPluginCreatorV3One* creator = checkedCreator<Spec>();
    if (creator == nullptr)
    {
        return;
    }

    Fields fields = validFields<Spec>();
    IPluginV3* plugin = creator->createPlugin(op.c_str(), fields.collection(), TensorRTPhase::kBUILD);
    check(plugin != nullptr, op + ": createPlugin accepts valid fields");
    if (plugin == nullptr)
    {
        return;
    }
    Capabilities cap = capabilities(plugin);
    check(cap.core != nullptr && cap.build != nullptr && cap.runtime != nullptr, op + ": all three capabilities");
    check(std::string(cap.core->getPluginName()) == op && std::string(cap.core->getPluginVersion()) == Spec::kVERSION
            && std::string(cap.core->getPluginNamespace()) == Spec::kNAMESPACE,
        op + ": core name, version, namespace");
    check(std::string(cap.core->getInterfaceInfo().kind) == "PLUGIN_V3ONE_CORE"
            && std::string(cap.build->getInterfaceInfo().kind) == "PLUGIN_V3ONE_BUILD"
            && std::string(cap.runtime->getInterfaceInfo().kind) == "PLUGIN_V3ONE_RUNTIME",
        op + ": capability interface kinds");

    // Serialization round trip: the stored fields rebuild an equal plugin (bit for bit) in the runtime phase.
    checkRoundTripCloneAttach<Spec>(creator, plugin, fields, op);

    selftestShapes<Spec>(cap.build, op);
    selftestFormatsAndConfigure<Spec>(cap.build, cap.runtime, op);
    delete plugin;
    selftestCreateValidation<Spec>(creator, op);
    selftestTensorRTOrder<Spec>(creator, op);
}

//! getOutputShapes of a plugin of ``Spec`` (valid fields, ``intField`` at every kINT32 field) on the example dims with
//! ``overrides``: 0 when it accepts them.
template <class Spec>
int32_t outputShapesWith(std::vector<std::pair<int32_t, int64_t>> const& overrides, int32_t intField = kExampleIntField)
{
    Fields f;
    for (int32_t i = 0; i < Spec::kNB_FIELDS; ++i)
    {
        if (isIntField<Spec>(i))
        {
            f.addRaw(Spec::kFIELD_NAMES[i], &intField, sizeof(int32_t), PluginFieldType::kINT32, 1);
        }
        else
        {
            f.addFloat(Spec::kFIELD_NAMES[i], 0.1F);
        }
    }
    IPluginV3* plugin = findCreator(Spec::kNAME)->createPlugin(Spec::kNAME, f.collection(), TensorRTPhase::kBUILD);
    if (plugin == nullptr)
    {
        return -1;
    }
    TestExprBuilder builder;
    std::vector<Dims> const dims = specDimsWith<Spec>(true, overrides);
    std::vector<DimsExprs> in(dims.size());
    for (size_t i = 0; i < dims.size(); ++i)
    {
        in[i].nbDims = dims[i].nbDims;
        for (int32_t j = 0; j < dims[i].nbDims; ++j)
        {
            in[i].d[j] = builder.constant(dims[i].d[j]);
        }
    }
    std::vector<DimsExprs> out(Spec::kNB_OUTPUTS);
    int32_t const rc = capabilities(plugin).build->getOutputShapes(
        in.data(), Spec::kNB_INPUTS, nullptr, 0, out.data(), Spec::kNB_OUTPUTS, builder);
    delete plugin;
    return rc;
}

//! The relations between the Mamba2 plugins' dims that no shared symbol states (their checkSizes), and the gated
//! norm's group_size limits.
void selftestMamba2Relations()
{
    using S = spec::Int8SSDScan;
    check(outputShapesWith<S>({}) == 0, "Int8SSDScan: accepts d_in 768 = 12 heads x 64, gn 32 = 2 groups x 16");
    check(outputShapesWith<S>({{spec::kSYM_D_IN, 704}}) != 0, "Int8SSDScan: refuses d_in != h * p");
    check(outputShapesWith<S>({{spec::kSYM_GN, 40}}) != 0, "Int8SSDScan: refuses gn not a multiple of n");
    check(outputShapesWith<S>({{spec::kSYM_GN, 80}}) != 0, "Int8SSDScan: refuses 5 groups for 12 heads");
    check(outputShapesWith<S>({{spec::kSYM_N, 128}, {spec::kSYM_GN, 128}, {spec::kSYM_H, 80}, {spec::kSYM_D_IN, 5120}})
            == 0,
        "Int8SSDScan: accepts Mamba2-2.7b's shapes (80 heads x 64, n 128, 1 group)");
    using G = spec::GatedRMSNormQuantize;
    using H = spec::GatedRMSNormHadamardQuantize;
    check(outputShapesWith<G>({{spec::kSYM_D_IN, 16384}}, 8192) == 0, "GatedRMSNormQuantize: accepts groups of 8192");
    check(outputShapesWith<G>({{spec::kSYM_D_IN, 16384}}, 16384) != 0,
        "GatedRMSNormQuantize: refuses a group of 16384 (> kRmsNormMaxDim)");
    check(outputShapesWith<H>({{spec::kSYM_D_IN, 16384}}, 16384) == 0,
        "GatedRMSNormHadamardQuantize: accepts one group of 16384");
    check(outputShapesWith<H>({{spec::kSYM_D_IN, 5120}}, 5120) == 0,
        "GatedRMSNormHadamardQuantize: accepts Mamba2-2.7b's d_in 5120 (20 x 256), one group");
    check(outputShapesWith<G>({{spec::kSYM_D_IN, 768}}, 500) != 0,
        "GatedRMSNormQuantize: refuses a group_size that does not divide d_in");
}

} // namespace

int selftest()
{
    std::printf("(the refused cases below log their one-line errors on stderr)\n");
    selftestOne<spec::Int8CausalConv1d>();
    selftestOne<spec::Int8SelectiveScan>();
    selftestOne<spec::HadamardQuantize>();
    selftestOne<spec::Int8CausalConv1dChannelScales>();
    selftestOne<spec::Int8SSDScan>();
    selftestOne<spec::GatedRMSNormQuantize>();
    selftestOne<spec::GatedRMSNormHadamardQuantize>();
    selftestMamba2Relations();
    std::printf("selftest: %d checks, %d failed\n", checkCount(), failureCount());
    return failureCount() == 0 ? 0 : 1;
}

// ---- describe -------------------------------------------------------------------------------------------------

namespace
{

//! The dtype supportsFormatCombination accepts at each position (linear format), found by asking it about each
//! candidate with the earlier positions set to what it accepted: what TensorRT's format search would see.
std::vector<std::string> acceptedTypes(IPluginV3OneBuild* build, int32_t nbInputs, int32_t nbOutputs)
{
    std::vector<DynamicPluginTensorDesc> io(nbInputs + nbOutputs);
    std::vector<std::string> accepted;
    for (int32_t pos = 0; pos < nbInputs + nbOutputs; ++pos)
    {
        std::string found;
        for (DataType t : {DataType::kFLOAT, DataType::kHALF, DataType::kINT8, DataType::kINT32})
        {
            io[pos].desc.type = t;
            io[pos].desc.format = TensorFormat::kLINEAR;
            if (build->supportsFormatCombination(pos, io.data(), nbInputs, nbOutputs))
            {
                found += (found.empty() ? "" : "|") + std::string(typeName(t));
            }
        }
        accepted.push_back(found);
        // leave io[pos] at the accepted type for the next positions
        for (DataType t : {DataType::kFLOAT, DataType::kHALF, DataType::kINT8})
        {
            io[pos].desc.type = t;
            if (build->supportsFormatCombination(pos, io.data(), nbInputs, nbOutputs))
            {
                break;
            }
        }
    }
    return accepted;
}

} // namespace

int describe()
{
    int32_t n = 0;
    IPluginCreatorInterface* const* creators = getCreators(n);
    std::printf("[");
    for (int32_t c = 0; c < n; ++c)
    {
        auto* creator = static_cast<IPluginCreatorV3One*>(creators[c]);
        PluginFieldCollection const* declared = creator->getFieldNames();
        std::printf("%s\n {\"interface\": \"%s\", \"name\": \"%s\", \"version\": \"%s\", \"namespace\": \"%s\", "
                    "\"fields\": [",
            c ? "," : "", creators[c]->getInterfaceInfo().kind, creator->getPluginName(), creator->getPluginVersion(),
            creator->getPluginNamespace());
        for (int32_t i = 0; i < declared->nbFields; ++i)
        {
            std::printf("%s[\"%s\", %d, %d]", i ? ", " : "", declared->fields[i].name,
                static_cast<int>(declared->fields[i].type), declared->fields[i].length);
        }
        // A plugin with valid fields, to read what it declares about its tensors (a scale 0.5, a group size 32).
        Fields fields;
        for (int32_t i = 0; i < declared->nbFields; ++i)
        {
            int32_t const groupSize = 32;
            if (declared->fields[i].type == PluginFieldType::kINT32)
            {
                fields.addRaw(declared->fields[i].name, &groupSize, sizeof(groupSize), PluginFieldType::kINT32, 1);
            }
            else
            {
                fields.addFloat(declared->fields[i].name, 0.5F);
            }
        }
        IPluginV3* plugin = creator->createPlugin(creator->getPluginName(), fields.collection(), TensorRTPhase::kBUILD);
        IPluginV3OneBuild* build = capabilities(plugin).build;
        int32_t const nbOutputs = build->getNbOutputs();
        // nbInputs is not in the interface: find the count the plugin accepts in supportsFormatCombination.
        int32_t nbInputs = 0;
        for (int32_t k = 1; k <= 16 && nbInputs == 0; ++k)
        {
            std::vector<DynamicPluginTensorDesc> probe(k + nbOutputs);
            for (DataType t : {DataType::kFLOAT, DataType::kHALF, DataType::kINT8})
            {
                probe[0].desc.type = t;
                probe[0].desc.format = TensorFormat::kLINEAR;
                if (build->supportsFormatCombination(0, probe.data(), k, nbOutputs))
                {
                    nbInputs = k;
                }
            }
        }
        std::vector<std::string> accepted = acceptedTypes(build, nbInputs, nbOutputs);
        std::printf("], \"inputs\": [");
        for (int32_t i = 0; i < nbInputs; ++i)
        {
            std::printf("%s\"%s\"", i ? ", " : "", accepted[i].c_str());
        }
        std::printf("], \"outputs\": [");
        std::vector<DataType> inTypes;
        for (int32_t i = 0; i < nbInputs; ++i)
        {
            inTypes.push_back(accepted[i] == "int8" ? DataType::kINT8
                    : accepted[i] == "float16"             ? DataType::kHALF
                                                           : DataType::kFLOAT);
        }
        std::vector<DataType> outTypes(nbOutputs);
        build->getOutputDataTypes(outTypes.data(), nbOutputs, inTypes.data(), nbInputs);
        for (int32_t o = 0; o < nbOutputs; ++o)
        {
            std::printf("%s[\"%s\", \"%s\"]", o ? ", " : "", accepted[nbInputs + o].c_str(), typeName(outTypes[o]));
        }
        std::printf("]}");
        delete plugin;
    }
    std::printf("\n]\n");
    return 0;
}

} // namespace test
} // namespace trt
} // namespace edge_quamba
