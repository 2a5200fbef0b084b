// Drives the edge-quamba TensorRT plugins through their own IPluginV3 interfaces, without libnvinfer.
//
//   harness selftest        every interface method of every plugin, on the host only (no GPU needed): creator
//                           fields, createPlugin validation, serialization round trip, output dtypes and shapes
//                           (through the test-only IExprBuilder), formats, configurePlugin/onShapeChange, clone
//   harness describe        what the creators and plugins declare, as JSON (tests compare it with the op specs)
//   harness run CASE_DIR... for each case folder written by make_cases.py: create the plugin from the case's
//                           fields, take the output shapes from getOutputShapes, configure, onShapeChange, enqueue
//                           on device buffers, write the outputs next to the inputs (check_cases.py compares)
//
// The plugins are linked in; creators come from the library's exported getCreators, as TensorRT gets them.
#include "common/opSpecs.h"
#include "testExprBuilder.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

extern "C" nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators);

namespace
{
using namespace nvinfer1;
using edge_quamba::trt::test::TestExprBuilder;
namespace spec = edge_quamba::trt::spec;

// ---- helpers ------------------------------------------------------------------------------------------------

IPluginCreatorV3One* findCreator(std::string const& name)
{
    int32_t n = 0;
    IPluginCreatorInterface* const* creators = getCreators(n);
    for (int32_t i = 0; i < n; ++i)
    {
        if (std::strcmp(creators[i]->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") != 0)
        {
            continue;
        }
        auto* creator = static_cast<IPluginCreatorV3One*>(creators[i]);
        if (name == creator->getPluginName())
        {
            return creator;
        }
    }
    return nullptr;
}

struct Capabilities
{
    IPluginV3OneCore* core;
    IPluginV3OneBuild* build;
    IPluginV3OneRuntime* runtime;
};

Capabilities capabilities(IPluginV3* plugin)
{
    return {static_cast<IPluginV3OneCore*>(plugin->getCapabilityInterface(PluginCapabilityType::kCORE)),
        static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD)),
        static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME))};
}

//! Owns the storage a PluginFieldCollection points into.
struct Fields
{
    std::vector<std::string> names;
    std::vector<std::vector<unsigned char>> data;
    std::vector<PluginFieldType> types;
    std::vector<int32_t> lengths;
    std::vector<PluginField> fields;
    PluginFieldCollection fc{};

    void addRaw(std::string const& name, void const* value, size_t bytes, PluginFieldType type, int32_t length)
    {
        auto const* p = static_cast<unsigned char const*>(value);
        names.push_back(name);
        data.emplace_back(p, p + bytes);
        types.push_back(type);
        lengths.push_back(length);
    }
    void addFloat(std::string const& name, float value)
    {
        addRaw(name, &value, sizeof(value), PluginFieldType::kFLOAT32, 1);
    }
    PluginFieldCollection const* collection()
    {
        fields.clear();
        for (size_t i = 0; i < names.size(); ++i)
        {
            fields.emplace_back(names[i].c_str(), data[i].data(), types[i], lengths[i]);
        }
        fc.nbFields = static_cast<int32_t>(fields.size());
        fc.fields = fields.data();
        return &fc;
    }
};

int gFailures = 0;
int gChecks = 0;

void check(bool ok, std::string const& what)
{
    ++gChecks;
    if (!ok)
    {
        ++gFailures;
        std::printf("FAIL %s\n", what.c_str());
    }
}

Dims makeDims(std::vector<int64_t> const& d)
{
    Dims dims{};
    dims.nbDims = static_cast<int32_t>(d.size());
    for (size_t i = 0; i < d.size(); ++i)
    {
        dims.d[i] = d[i];
    }
    return dims;
}

size_t elementSize(DataType t)
{
    return t == DataType::kINT8 ? 1 : 4;
}

int64_t volume(Dims const& d)
{
    int64_t v = 1;
    for (int32_t i = 0; i < d.nbDims; ++i)
    {
        v *= d.d[i];
    }
    return v;
}

// ---- selftest -------------------------------------------------------------------------------------------------

//! Sizes used for the shape checks: d_in = 768 (demo model, 12 * 64: a supported Hadamard size), n = 16, k = 4.
int64_t exampleSize(int32_t symbol)
{
    int64_t const sizes[spec::kNB_SYMBOLS] = {2, 5, 768, 4, 16};
    return sizes[symbol];
}

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

template <class Spec>
std::vector<Dims> specDims(bool inputs, int32_t overrideSymbol = -1, int64_t overrideValue = 0)
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
            d.push_back(s == overrideSymbol ? overrideValue : exampleSize(s));
        }
        all.push_back(makeDims(d));
    }
    return all;
}

template <class Spec>
Fields validFields()
{
    Fields f;
    for (int32_t i = 0; i < Spec::kNB_FIELDS; ++i)
    {
        f.addFloat(Spec::kFIELD_NAMES[i], 0.01F * static_cast<float>(i + 1) + 0.003F);
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
    for (int32_t i = 0; i < Spec::kNB_FIELDS; ++i)
    {
        std::string const name = Spec::kFIELD_NAMES[i];
        for (int b = 0; b < 4; ++b)
        {
            Fields f;
            for (int32_t j = 0; j < Spec::kNB_FIELDS; ++j)
            {
                f.addFloat(Spec::kFIELD_NAMES[j], j == i ? bad[b] : 0.1F);
            }
            refused(f, std::string("a ") + badNames[b] + " " + name);
        }
        Fields missing;
        for (int32_t j = 0; j < Spec::kNB_FIELDS; ++j)
        {
            if (j != i)
            {
                missing.addFloat(Spec::kFIELD_NAMES[j], 0.1F);
            }
        }
        refused(missing, "a missing " + name);
        Fields wrongType = missing;
        double const d = 0.1;
        wrongType.addRaw(name, &d, sizeof(d), PluginFieldType::kFLOAT64, 1);
        refused(wrongType, name + " as kFLOAT64");
        Fields twoValues = missing;
        float const two[2] = {0.1F, 0.2F};
        twoValues.addRaw(name, two, sizeof(two), PluginFieldType::kFLOAT32, 2);
        refused(twoValues, name + " of length 2");
    }
    Fields extra = validFields<Spec>();
    extra.addFloat("not_a_field", 0.1F);
    refused(extra, "an unknown field");
    Fields twice = validFields<Spec>();
    twice.addFloat(Spec::kFIELD_NAMES[0], 0.1F);
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

template <class Spec>
void selftestOne()
{
    std::string const op = Spec::kNAME;
    IPluginCreatorV3One* creator = findCreator(op);
    check(creator != nullptr, op + ": getCreators lists a V3One creator");
    if (creator == nullptr)
    {
        return;
    }
    check(std::string(creator->getPluginVersion()) == Spec::kVERSION, op + ": creator version");
    check(std::string(creator->getPluginNamespace()) == Spec::kNAMESPACE, op + ": creator namespace");
    PluginFieldCollection const* declared = creator->getFieldNames();
    check(declared != nullptr && declared->nbFields == Spec::kNB_FIELDS, op + ": getFieldNames count");
    for (int32_t i = 0; declared != nullptr && i < declared->nbFields && i < Spec::kNB_FIELDS; ++i)
    {
        check(std::string(declared->fields[i].name) == Spec::kFIELD_NAMES[i]
                && declared->fields[i].type == PluginFieldType::kFLOAT32 && declared->fields[i].length == 1,
            op + ": declared field " + Spec::kFIELD_NAMES[i]);
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
    PluginFieldCollection const* stored = cap.runtime->getFieldsToSerialize();
    IPluginV3* restored = creator->createPlugin(op.c_str(), stored, TensorRTPhase::kRUNTIME);
    check(restored != nullptr, op + ": createPlugin(kRUNTIME) accepts getFieldsToSerialize's fields");
    if (restored != nullptr)
    {
        PluginFieldCollection const* again = capabilities(restored).runtime->getFieldsToSerialize();
        bool same = again->nbFields == Spec::kNB_FIELDS;
        for (int32_t i = 0; same && i < Spec::kNB_FIELDS; ++i)
        {
            same = std::string(again->fields[i].name) == Spec::kFIELD_NAMES[i]
                && again->fields[i].type == PluginFieldType::kFLOAT32 && again->fields[i].length == 1
                && std::memcmp(again->fields[i].data, fields.data[i].data(), sizeof(float)) == 0;
        }
        check(same, op + ": serialization round trip is exact");
        delete restored;
    }

    IPluginV3* copy = plugin->clone();
    check(copy != nullptr && capabilities(copy).core != nullptr, op + ": clone");
    delete copy;
    IPluginV3* attached = cap.runtime->attachToContext(nullptr);
    check(attached != nullptr, op + ": attachToContext");
    delete attached;

    selftestShapes<Spec>(cap.build, op);
    selftestFormatsAndConfigure<Spec>(cap.build, cap.runtime, op);
    delete plugin;
    selftestCreateValidation<Spec>(creator, op);
}

int selftest()
{
    std::printf("(the refused cases below log their one-line errors on stderr)\n");
    selftestOne<spec::Int8CausalConv1d>();
    selftestOne<spec::Int8SelectiveScan>();
    selftestOne<spec::HadamardQuantize>();
    std::printf("selftest: %d checks, %d failed\n", gChecks, gFailures);
    return gFailures == 0 ? 0 : 1;
}

// ---- describe -------------------------------------------------------------------------------------------------

char const* typeName(DataType t)
{
    switch (t)
    {
    case DataType::kFLOAT: return "float32";
    case DataType::kINT8: return "int8";
    case DataType::kHALF: return "float16";
    case DataType::kINT32: return "int32";
    default: return "other";
    }
}

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

// ---- run --------------------------------------------------------------------------------------------------------

struct TensorFile
{
    std::string name;
    DataType type;
    Dims dims;
    std::string file;
};

struct Case
{
    std::string dir;
    std::string plugin;
    Fields fields;
    std::vector<TensorFile> inputs;
    std::vector<TensorFile> outputs; // expected dims (getOutputShapes must agree)
    std::vector<std::pair<int32_t, int32_t>> aliases; // (output, input): also run with the output in place
};

[[noreturn]] void fatal(std::string const& message)
{
    std::fprintf(stderr, "harness: %s\n", message.c_str());
    std::exit(2);
}

#define CUDA_CHECK(call)                                                                                               \
    do                                                                                                                 \
    {                                                                                                                  \
        cudaError_t const status_ = (call);                                                                            \
        if (status_ != cudaSuccess)                                                                                    \
            fatal(std::string(#call) + ": " + cudaGetErrorString(status_));                                           \
    } while (0)

TensorFile readTensorLine(std::istringstream& line)
{
    TensorFile t;
    std::string type;
    int32_t rank = 0;
    line >> t.name >> type >> rank;
    if (type != "int8" && type != "float32")
    {
        fatal("unknown dtype " + type);
    }
    t.type = type == "int8" ? DataType::kINT8 : DataType::kFLOAT;
    std::vector<int64_t> d(rank);
    for (auto& v : d)
    {
        line >> v;
    }
    t.dims = makeDims(d);
    line >> t.file;
    return t;
}

//! case.txt, one item a line:  plugin NAME | field NAME HEXFLOAT | input NAME DTYPE RANK DIMS... FILE |
//! output NAME DTYPE RANK DIMS... FILE | alias OUTPUT_INDEX INPUT_INDEX
Case readCase(std::string const& dir)
{
    Case c;
    c.dir = dir;
    std::ifstream in(dir + "/case.txt");
    if (!in)
    {
        fatal("cannot read " + dir + "/case.txt");
    }
    std::string text;
    while (std::getline(in, text))
    {
        std::istringstream line(text);
        std::string key;
        line >> key;
        if (key == "plugin")
        {
            line >> c.plugin;
        }
        else if (key == "field")
        {
            std::string name, value;
            line >> name >> value;
            c.fields.addFloat(name, std::strtof(value.c_str(), nullptr)); // hex float: exact
        }
        else if (key == "input")
        {
            c.inputs.push_back(readTensorLine(line));
        }
        else if (key == "output")
        {
            c.outputs.push_back(readTensorLine(line));
        }
        else if (key == "alias")
        {
            int32_t o = 0, i = 0;
            line >> o >> i;
            c.aliases.emplace_back(o, i);
        }
        else if (!key.empty())
        {
            fatal(dir + "/case.txt: unknown line " + text);
        }
    }
    return c;
}

std::vector<char> readFile(std::string const& path, size_t bytes)
{
    std::ifstream in(path, std::ios::binary);
    std::vector<char> data(bytes);
    if (!in.read(data.data(), static_cast<std::streamsize>(bytes)) || in.peek() != EOF)
    {
        fatal(path + " does not hold exactly " + std::to_string(bytes) + " bytes");
    }
    return data;
}

void writeFile(std::string const& path, void const* data, size_t bytes)
{
    std::ofstream out(path, std::ios::binary);
    out.write(static_cast<char const*>(data), static_cast<std::streamsize>(bytes));
    if (!out)
    {
        fatal("cannot write " + path);
    }
}

//! Runs one case; returns the median enqueue time in microseconds (cudaEvent timing of repeated enqueues).
double runCase(Case& c)
{
    IPluginCreatorV3One* creator = findCreator(c.plugin);
    if (creator == nullptr)
    {
        fatal("no creator for " + c.plugin);
    }
    IPluginV3* plugin = creator->createPlugin(c.plugin.c_str(), c.fields.collection(), TensorRTPhase::kBUILD);
    if (plugin == nullptr)
    {
        fatal(c.dir + ": createPlugin refused the case's fields");
    }
    // As an engine would: serialize, then deserialize for the runtime phase, and attach to a "context".
    IPluginV3* runtimePlugin
        = creator->createPlugin(c.plugin.c_str(), capabilities(plugin).runtime->getFieldsToSerialize(),
            TensorRTPhase::kRUNTIME);
    IPluginV3* attached = runtimePlugin != nullptr ? capabilities(runtimePlugin).runtime->attachToContext(nullptr)
                                                   : nullptr;
    if (attached == nullptr)
    {
        fatal(c.dir + ": runtime plugin could not be created");
    }
    IPluginV3OneBuild* build = capabilities(plugin).build;
    IPluginV3OneRuntime* runtime = capabilities(attached).runtime;
    int32_t const nbIn = static_cast<int32_t>(c.inputs.size());
    int32_t const nbOut = build->getNbOutputs();
    if (nbOut != static_cast<int32_t>(c.outputs.size()))
    {
        fatal(c.dir + ": plugin has " + std::to_string(nbOut) + " outputs, case lists " +
            std::to_string(c.outputs.size()));
    }

    TestExprBuilder builder;
    std::vector<DimsExprs> inExprs(nbIn);
    for (int32_t i = 0; i < nbIn; ++i)
    {
        inExprs[i].nbDims = c.inputs[i].dims.nbDims;
        for (int32_t j = 0; j < inExprs[i].nbDims; ++j)
        {
            inExprs[i].d[j] = builder.constant(c.inputs[i].dims.d[j]);
        }
    }
    std::vector<DimsExprs> outExprs(nbOut);
    if (build->getOutputShapes(inExprs.data(), nbIn, nullptr, 0, outExprs.data(), nbOut, builder) != 0)
    {
        fatal(c.dir + ": getOutputShapes failed");
    }
    std::vector<DataType> inTypes, outTypes(nbOut);
    for (auto const& t : c.inputs)
    {
        inTypes.push_back(t.type);
    }
    if (build->getOutputDataTypes(outTypes.data(), nbOut, inTypes.data(), nbIn) != 0)
    {
        fatal(c.dir + ": getOutputDataTypes failed");
    }
    std::vector<DynamicPluginTensorDesc> dynIn(nbIn), dynOut(nbOut);
    std::vector<PluginTensorDesc> descIn(nbIn), descOut(nbOut);
    for (int32_t i = 0; i < nbIn; ++i)
    {
        descIn[i] = PluginTensorDesc{c.inputs[i].dims, c.inputs[i].type, TensorFormat::kLINEAR, 1.0F};
        dynIn[i] = DynamicPluginTensorDesc{descIn[i], c.inputs[i].dims, c.inputs[i].dims, c.inputs[i].dims};
    }
    for (int32_t o = 0; o < nbOut; ++o)
    {
        Dims d{};
        d.nbDims = outExprs[o].nbDims;
        for (int32_t j = 0; j < d.nbDims; ++j)
        {
            if (!outExprs[o].d[j]->isConstant())
            {
                fatal(c.dir + ": output dims are not constant for constant inputs");
            }
            d.d[j] = outExprs[o].d[j]->getConstantValue();
        }
        bool same = d.nbDims == c.outputs[o].dims.nbDims && outTypes[o] == c.outputs[o].type;
        for (int32_t j = 0; same && j < d.nbDims; ++j)
        {
            same = d.d[j] == c.outputs[o].dims.d[j];
        }
        if (!same)
        {
            fatal(c.dir + ": getOutputShapes/getOutputDataTypes disagree with the case for output " + c.outputs[o].name);
        }
        descOut[o] = PluginTensorDesc{d, outTypes[o], TensorFormat::kLINEAR, 1.0F};
        dynOut[o] = DynamicPluginTensorDesc{descOut[o], d, d, d};
    }
    for (int32_t pos = 0; pos < nbIn + nbOut; ++pos)
    {
        std::vector<DynamicPluginTensorDesc> io(dynIn);
        io.insert(io.end(), dynOut.begin(), dynOut.end());
        if (!build->supportsFormatCombination(pos, io.data(), nbIn, nbOut))
        {
            fatal(c.dir + ": supportsFormatCombination refuses position " + std::to_string(pos));
        }
    }
    if (build->configurePlugin(dynIn.data(), nbIn, dynOut.data(), nbOut) != 0
        || runtime->onShapeChange(descIn.data(), nbIn, descOut.data(), nbOut) != 0)
    {
        fatal(c.dir + ": configurePlugin/onShapeChange failed");
    }
    size_t const workspaceBytes = build->getWorkspaceSize(dynIn.data(), nbIn, dynOut.data(), nbOut);

    cudaStream_t stream;
    CUDA_CHECK(cudaStreamCreate(&stream));
    std::vector<void*> dIn(nbIn), dOut(nbOut);
    std::vector<std::vector<char>> hostIn(nbIn);
    for (int32_t i = 0; i < nbIn; ++i)
    {
        size_t const bytes = volume(c.inputs[i].dims) * elementSize(c.inputs[i].type);
        hostIn[i] = readFile(c.dir + "/" + c.inputs[i].file, bytes);
        CUDA_CHECK(cudaMalloc(&dIn[i], std::max<size_t>(bytes, 1)));
        CUDA_CHECK(cudaMemcpy(dIn[i], hostIn[i].data(), bytes, cudaMemcpyHostToDevice));
    }
    for (int32_t o = 0; o < nbOut; ++o)
    {
        size_t const bytes = volume(descOut[o].dims) * elementSize(outTypes[o]);
        CUDA_CHECK(cudaMalloc(&dOut[o], std::max<size_t>(bytes, 1)));
        CUDA_CHECK(cudaMemset(dOut[o], 0x7f, bytes)); // garbage: every element must be written
    }
    void* workspace = nullptr;
    if (workspaceBytes > 0)
    {
        CUDA_CHECK(cudaMalloc(&workspace, workspaceBytes));
    }
    auto enqueue = [&](std::vector<void*> const& outs) {
        if (runtime->enqueue(descIn.data(), descOut.data(), dIn.data(), outs.data(), workspace, stream) != 0)
        {
            fatal(c.dir + ": enqueue failed");
        }
    };
    enqueue(dOut);
    CUDA_CHECK(cudaStreamSynchronize(stream));
    CUDA_CHECK(cudaGetLastError());
    for (int32_t o = 0; o < nbOut; ++o)
    {
        size_t const bytes = volume(descOut[o].dims) * elementSize(outTypes[o]);
        std::vector<char> host(bytes);
        CUDA_CHECK(cudaMemcpy(host.data(), dOut[o], bytes, cudaMemcpyDeviceToHost));
        writeFile(c.dir + "/" + c.outputs[o].file, host.data(), bytes);
    }

    // Timing: the outputs do not feed the inputs, so repeated enqueues are identical work.
    cudaEvent_t start, stop;
    CUDA_CHECK(cudaEventCreate(&start));
    CUDA_CHECK(cudaEventCreate(&stop));
    std::vector<float> times;
    for (int rep = 0; rep < 21; ++rep)
    {
        CUDA_CHECK(cudaEventRecord(start, stream));
        enqueue(dOut);
        CUDA_CHECK(cudaEventRecord(stop, stream));
        CUDA_CHECK(cudaEventSynchronize(stop));
        float ms = 0.0F;
        CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
        times.push_back(ms);
    }
    std::sort(times.begin(), times.end());

    // In-place state update (the kernels allow an output to alias its input): the output pointer IS the input
    // buffer, freshly restored; the result goes to "<output file>.alias".
    for (auto const& [o, i] : c.aliases)
    {
        size_t const bytes = volume(c.inputs[i].dims) * elementSize(c.inputs[i].type);
        CUDA_CHECK(cudaMemcpy(dIn[i], hostIn[i].data(), bytes, cudaMemcpyHostToDevice));
        std::vector<void*> outs(dOut);
        outs[o] = dIn[i];
        enqueue(outs);
        CUDA_CHECK(cudaStreamSynchronize(stream));
        std::vector<char> host(bytes);
        CUDA_CHECK(cudaMemcpy(host.data(), dIn[i], bytes, cudaMemcpyDeviceToHost));
        writeFile(c.dir + "/" + c.outputs[o].file + ".alias", host.data(), bytes);
        CUDA_CHECK(cudaMemcpy(dIn[i], hostIn[i].data(), bytes, cudaMemcpyHostToDevice));
    }

    CUDA_CHECK(cudaEventDestroy(start));
    CUDA_CHECK(cudaEventDestroy(stop));
    for (void* p : dIn)
    {
        CUDA_CHECK(cudaFree(p));
    }
    for (void* p : dOut)
    {
        CUDA_CHECK(cudaFree(p));
    }
    CUDA_CHECK(cudaFree(workspace));
    CUDA_CHECK(cudaStreamDestroy(stream));
    delete attached;
    delete runtimePlugin;
    delete plugin;
    return 1e3 * times[times.size() / 2];
}

int run(int argc, char** argv)
{
    cudaDeviceProp prop{};
    int device = 0;
    CUDA_CHECK(cudaGetDevice(&device));
    CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    std::printf("device %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
    for (int a = 0; a < argc; ++a)
    {
        Case c = readCase(argv[a]);
        double const us = runCase(c);
        std::ofstream(c.dir + "/result.txt") << "enqueue_us " << us << "\n";
        std::printf("ran %-48s %-18s median enqueue %9.2f us\n", argv[a], c.plugin.c_str(), us);
    }
    return 0;
}

} // namespace

int main(int argc, char** argv)
{
    std::string const mode = argc > 1 ? argv[1] : "";
    if (mode == "selftest" && argc == 2)
    {
        return selftest();
    }
    if (mode == "describe" && argc == 2)
    {
        return describe();
    }
    if (mode == "run" && argc > 2)
    {
        return run(argc - 2, argv + 2);
    }
    std::fprintf(stderr, "usage: harness selftest | harness describe | harness run CASE_DIR...\n");
    return 2;
}
