// Drives the 4-bit linear plugins (W4A8Linear, W4A8LinearQuantize, W4A16Linear: Int4LinearPlugin/) through their own
// IPluginV3 interfaces, in TensorRT's call order, without libnvinfer. A separate executable from harness.cpp (which
// covers the int8 plugins), linked against the plugin library and reaching the creators through its exported
// getCreators, as TensorRT does.
//
//   int4_linear_harness selftest        host only: creator fields (kFLOAT32 scales and the kINT32 group_size),
//                                       createPlugin validation, the serialization round trip, clone/attachToContext,
//                                       getOutputShapes (constant and runtime dims; refusal of a weight or scale
//                                       width that does not fit K and group_size, of K > 131071 and of too many
//                                       groups), supportsFormatCombination, getOutputDataTypes, configurePlugin,
//                                       onShapeChange
//   int4_linear_harness run CASE_DIR... each case of make_int4_cases.py: one plugin object's life in TensorRT (below);
//                                       writes every step's output next to its expected output (check_int4_cases.py
//                                       compares) and the median enqueue time per step to CASE_DIR/result.txt
//
// A case's life, as TensorRT lives it: createPlugin(kBUILD) from the case's fields; getOutputDataTypes and
// getOutputShapes on runtime (symbolic) b and l; supportsFormatCombination at every position; configurePlugin with
// the profile's min/opt/max; the build-time run (onShapeChange + enqueue at the opt shape, the build plugin itself,
// as a tactic timing run would); then getFieldsToSerialize -> createPlugin(kRUNTIME) -> attachToContext, and on that
// one runtime object the shape steps in the case's order (onShapeChange on every change of b or l, then enqueue),
// and finally a decode step captured once into a CUDA graph and replayed for new inputs copied into the same buffer.
// Every output buffer is poisoned before each step (int8 -128, which the requantizing epilogue never writes; NaN
// bytes for floats). The weights (weight_packed, weight_scale, bias) stay in device memory for the whole life, as a
// network's constants do.
#include "common/opSpecs.h"
#include "testExprBuilder.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
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
        if (std::strcmp(creators[i]->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") == 0
            && name == static_cast<IPluginCreatorV3One*>(creators[i])->getPluginName())
        {
            return static_cast<IPluginCreatorV3One*>(creators[i]);
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
    void addInt(std::string const& name, int32_t value)
    {
        addRaw(name, &value, sizeof(value), PluginFieldType::kINT32, 1);
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

[[noreturn]] void fatal(std::string const& message)
{
    std::fprintf(stderr, "int4_linear_harness: %s\n", message.c_str());
    std::exit(2);
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
    return t == DataType::kINT8 ? 1 : t == DataType::kHALF ? 2 : 4;
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

//! The linear's tensors at (b, l, K, N, G): inputs x, weight_packed, weight_scale, bias; output y.
std::vector<Dims> linearDims(int64_t b, int64_t l, int64_t k, int64_t n, int64_t groups)
{
    return {makeDims({b, l, k}), makeDims({n, (k + 1) / 2}), makeDims({n, groups}), makeDims({n}),
        makeDims({b, l, n})};
}

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
    IPluginCreatorV3One* creator = findCreator(op);
    check(creator != nullptr, op + ": getCreators lists a V3One creator");
    if (creator == nullptr)
    {
        return;
    }
    check(std::string(creator->getPluginVersion()) == Spec::kVERSION
            && std::string(creator->getPluginNamespace()) == Spec::kNAMESPACE,
        op + ": creator version and namespace");
    PluginFieldCollection const* declared = creator->getFieldNames();
    check(declared != nullptr && declared->nbFields == Spec::kNB_FIELDS, op + ": getFieldNames count");
    for (int32_t i = 0; declared != nullptr && i < declared->nbFields && i < Spec::kNB_FIELDS; ++i)
    {
        check(std::string(declared->fields[i].name) == Spec::kFIELD_NAMES[i]
                && declared->fields[i].type == Spec::kFIELD_TYPES[i] && declared->fields[i].length == 1,
            op + ": declared field " + Spec::kFIELD_NAMES[i]);
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
                && again->fields[i].type == Spec::kFIELD_TYPES[i] && again->fields[i].length == 1
                && std::memcmp(again->fields[i].data, fields.data[i].data(), 4) == 0;
        }
        check(same, op + ": serialization round trip is exact (scales and group_size)");
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

int selftest()
{
    std::printf("(the refused cases below log their one-line errors on stderr)\n");
    selftestOne<spec::W4A8Linear>();
    selftestOne<spec::W4A8LinearQuantize>();
    selftestOne<spec::W4A16Linear>();
    std::printf("selftest: %d checks, %d failed\n", gChecks, gFailures);
    return gFailures == 0 ? 0 : 1;
}

// ---- run --------------------------------------------------------------------------------------------------------

#define CUDA_CHECK(call)                                                                                               \
    do                                                                                                                 \
    {                                                                                                                  \
        cudaError_t const status_ = (call);                                                                            \
        if (status_ != cudaSuccess)                                                                                    \
            fatal(std::string(#call) + ": " + cudaGetErrorString(status_));                                           \
    } while (0)

DataType parseType(std::string const& type)
{
    if (type == "int8")
    {
        return DataType::kINT8;
    }
    if (type == "float16")
    {
        return DataType::kHALF;
    }
    if (type == "float32")
    {
        return DataType::kFLOAT;
    }
    fatal("unknown dtype " + type);
}

struct Constant
{
    std::string name;
    DataType type;
    Dims dims;
    std::string file;
};

struct Step
{
    std::string mode; // build | shape | graph
    int64_t b, l;
    std::vector<std::string> dirs; // one per run (graph: one per replay)
};

//! case.txt, one item a line:
//!   plugin NAME
//!   field NAME float HEXFLOAT | field NAME int VALUE         the ONNX attributes (hex floats: exact)
//!   constant NAME DTYPE RANK DIMS... FILE                    weight_packed, weight_scale, bias (graph constants)
//!   profile K N MIN_B OPT_B MAX_B MIN_L OPT_L MAX_L          the optimization profile of the dynamic b, l
//!   step build|shape B L DIR | step graph B L DIR...         in order; each DIR holds the activation input
//!                                                            <x>.bin and gets the output <y>.bin
struct Case
{
    std::string dir;
    std::string plugin;
    Fields fields;
    std::vector<Constant> constants;
    int64_t k = 0, n = 0, minB = 1, optB = 1, maxB = 1, minL = 1, optL = 1, maxL = 1;
    std::vector<Step> steps;
};

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
            std::string name, type, value;
            line >> name >> type >> value;
            if (type == "int")
            {
                c.fields.addInt(name, static_cast<int32_t>(std::strtol(value.c_str(), nullptr, 10)));
            }
            else
            {
                c.fields.addFloat(name, std::strtof(value.c_str(), nullptr));
            }
        }
        else if (key == "constant")
        {
            Constant t;
            std::string type;
            int32_t rank = 0;
            line >> t.name >> type >> rank;
            t.type = parseType(type);
            std::vector<int64_t> d(rank);
            for (auto& v : d)
            {
                line >> v;
            }
            t.dims = makeDims(d);
            line >> t.file;
            c.constants.push_back(t);
        }
        else if (key == "profile")
        {
            line >> c.k >> c.n >> c.minB >> c.optB >> c.maxB >> c.minL >> c.optL >> c.maxL;
        }
        else if (key == "step")
        {
            Step s;
            line >> s.mode >> s.b >> s.l;
            std::string d;
            while (line >> d)
            {
                s.dirs.push_back(d);
            }
            if ((s.mode != "build" && s.mode != "shape" && s.mode != "graph") || s.dirs.empty())
            {
                fatal(dir + "/case.txt: bad step line " + text);
            }
            c.steps.push_back(s);
        }
        else if (!key.empty())
        {
            fatal(dir + "/case.txt: unknown line " + text);
        }
    }
    if (c.constants.size() != 3 || c.k <= 0 || c.n <= 0 || c.steps.empty())
    {
        fatal(dir + "/case.txt: needs three constants, a profile and steps");
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

//! One plugin object's device side: the constant inputs, and activation/output buffers sized for the profile's max.
class Runner
{
public:
    Runner(Case const& c, DataType xType, DataType yType)
        : mCase(c)
        , mXType(xType)
        , mYType(yType)
    {
        CUDA_CHECK(cudaStreamCreate(&mStream));
        for (Constant const& t : c.constants)
        {
            size_t const bytes = volume(t.dims) * elementSize(t.type);
            std::vector<char> host = readFile(c.dir + "/" + t.file, bytes);
            void* d = nullptr;
            CUDA_CHECK(cudaMalloc(&d, bytes));
            CUDA_CHECK(cudaMemcpy(d, host.data(), bytes, cudaMemcpyHostToDevice));
            mConstants.push_back(d);
        }
        int64_t const rows = c.maxB * c.maxL;
        CUDA_CHECK(cudaMalloc(&mX, rows * c.k * elementSize(xType)));
        CUDA_CHECK(cudaMalloc(&mY, rows * c.n * elementSize(yType)));
    }

    ~Runner()
    {
        for (void* p : mConstants)
        {
            cudaFree(p);
        }
        cudaFree(mX);
        cudaFree(mY);
        cudaStreamDestroy(mStream);
    }

    //! The descs of (b, l): x, the constants, y.
    std::vector<PluginTensorDesc> descs(int64_t b, int64_t l) const
    {
        std::vector<PluginTensorDesc> d;
        d.push_back(PluginTensorDesc{makeDims({b, l, mCase.k}), mXType, TensorFormat::kLINEAR, 1.0F});
        for (Constant const& t : mCase.constants)
        {
            d.push_back(PluginTensorDesc{t.dims, t.type, TensorFormat::kLINEAR, 1.0F});
        }
        d.push_back(PluginTensorDesc{makeDims({b, l, mCase.n}), mYType, TensorFormat::kLINEAR, 1.0F});
        return d;
    }

    void loadInput(std::string const& dir, std::string const& name, int64_t rows)
    {
        size_t const bytes = rows * mCase.k * elementSize(mXType);
        std::vector<char> host = readFile(mCase.dir + "/" + dir + "/" + name + ".bin", bytes);
        CUDA_CHECK(cudaMemcpyAsync(mX, host.data(), bytes, cudaMemcpyHostToDevice, mStream));
        CUDA_CHECK(cudaStreamSynchronize(mStream)); // the host copy goes out of scope
    }

    void poisonOutput(int64_t rows)
    {
        // int8: -128 (the epilogue clamps to [-127, 127]); floats: all bits set (NaN)
        CUDA_CHECK(cudaMemsetAsync(mY, mYType == DataType::kINT8 ? 0x80 : 0xff, rows * mCase.n * elementSize(mYType),
            mStream));
    }

    void saveOutput(std::string const& dir, std::string const& name, int64_t rows)
    {
        size_t const bytes = rows * mCase.n * elementSize(mYType);
        std::vector<char> host(bytes);
        CUDA_CHECK(cudaMemcpyAsync(host.data(), mY, bytes, cudaMemcpyDeviceToHost, mStream));
        CUDA_CHECK(cudaStreamSynchronize(mStream));
        writeFile(mCase.dir + "/" + dir + "/" + name + ".bin", host.data(), bytes);
    }

    void enqueue(IPluginV3OneRuntime* runtime, std::vector<PluginTensorDesc> const& d)
    {
        void const* inputs[4] = {mX, mConstants[0], mConstants[1], mConstants[2]};
        void* outputs[1] = {mY};
        if (runtime->enqueue(d.data(), &d[4], inputs, outputs, nullptr, mStream) != 0)
        {
            fatal(mCase.dir + ": enqueue failed");
        }
    }

    //! Median of 21 timed enqueues (identical work: the output never feeds the input), microseconds.
    double time(IPluginV3OneRuntime* runtime, std::vector<PluginTensorDesc> const& d, cudaGraphExec_t graph)
    {
        cudaEvent_t start, stop;
        CUDA_CHECK(cudaEventCreate(&start));
        CUDA_CHECK(cudaEventCreate(&stop));
        std::vector<float> times;
        for (int rep = 0; rep < 21; ++rep)
        {
            CUDA_CHECK(cudaEventRecord(start, mStream));
            if (graph != nullptr)
            {
                CUDA_CHECK(cudaGraphLaunch(graph, mStream));
            }
            else
            {
                enqueue(runtime, d);
            }
            CUDA_CHECK(cudaEventRecord(stop, mStream));
            CUDA_CHECK(cudaEventSynchronize(stop));
            float ms = 0.0F;
            CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
            times.push_back(ms);
        }
        CUDA_CHECK(cudaEventDestroy(start));
        CUDA_CHECK(cudaEventDestroy(stop));
        std::sort(times.begin(), times.end());
        return 1e3 * times[times.size() / 2];
    }

    cudaStream_t stream() const
    {
        return mStream;
    }

private:
    Case const& mCase;
    DataType mXType, mYType;
    std::vector<void*> mConstants;
    void* mX = nullptr;
    void* mY = nullptr;
    cudaStream_t mStream{};
};

//! The build phase up to configurePlugin (file comment); returns the build plugin.
IPluginV3* buildPhase(Case& c, IPluginCreatorV3One* creator, DataType& xType, DataType& yType)
{
    IPluginV3* plugin = creator->createPlugin(c.plugin.c_str(), c.fields.collection(), TensorRTPhase::kBUILD);
    if (plugin == nullptr)
    {
        fatal(c.dir + ": createPlugin refused the case's fields");
    }
    IPluginV3OneBuild* build = capabilities(plugin).build;
    std::vector<DataType> inTypes{DataType::kINT8};
    for (Constant const& t : c.constants)
    {
        inTypes.push_back(t.type);
    }
    // The activation dtype is the one the plugin accepts at position 0 (int8 for W4A8, fp16 for W4A16).
    std::vector<DynamicPluginTensorDesc> io(5);
    for (DataType t : {DataType::kINT8, DataType::kHALF})
    {
        io[0].desc.type = t;
        io[0].desc.format = TensorFormat::kLINEAR;
        if (build->supportsFormatCombination(0, io.data(), 4, 1))
        {
            inTypes[0] = t;
        }
    }
    xType = inTypes[0];
    if (build->getOutputDataTypes(&yType, 1, inTypes.data(), 4) != 0)
    {
        fatal(c.dir + ": getOutputDataTypes failed");
    }
    TestExprBuilder builder;
    std::vector<DimsExprs> in(4);
    in[0].nbDims = 3;
    in[0].d[0] = builder.symbol();
    in[0].d[1] = builder.symbol();
    in[0].d[2] = builder.constant(c.k);
    for (size_t i = 0; i < c.constants.size(); ++i)
    {
        in[i + 1].nbDims = c.constants[i].dims.nbDims;
        for (int32_t j = 0; j < in[i + 1].nbDims; ++j)
        {
            in[i + 1].d[j] = builder.constant(c.constants[i].dims.d[j]);
        }
    }
    DimsExprs out{};
    if (build->getOutputShapes(in.data(), 4, nullptr, 0, &out, 1, builder) != 0 || out.nbDims != 3
        || out.d[0] != in[0].d[0] || out.d[1] != in[0].d[1] || !out.d[2]->isConstant()
        || out.d[2]->getConstantValue() != c.n)
    {
        fatal(c.dir + ": getOutputShapes does not give (b, l, N)");
    }
    for (int32_t i = 0; i < 4; ++i)
    {
        Dims const dims = i == 0 ? makeDims({-1, -1, c.k}) : c.constants[i - 1].dims;
        io[i].desc = PluginTensorDesc{dims, inTypes[i], TensorFormat::kLINEAR, 1.0F};
        io[i].min = i == 0 ? makeDims({c.minB, c.minL, c.k}) : dims;
        io[i].opt = i == 0 ? makeDims({c.optB, c.optL, c.k}) : dims;
        io[i].max = i == 0 ? makeDims({c.maxB, c.maxL, c.k}) : dims;
    }
    io[4].desc = PluginTensorDesc{makeDims({-1, -1, c.n}), yType, TensorFormat::kLINEAR, 1.0F};
    io[4].min = makeDims({c.minB, c.minL, c.n});
    io[4].opt = makeDims({c.optB, c.optL, c.n});
    io[4].max = makeDims({c.maxB, c.maxL, c.n});
    for (int32_t pos = 0; pos < 5; ++pos)
    {
        if (!build->supportsFormatCombination(pos, io.data(), 4, 1))
        {
            fatal(c.dir + ": supportsFormatCombination refuses position " + std::to_string(pos));
        }
    }
    if (build->configurePlugin(io.data(), 4, &io[4], 1) != 0)
    {
        fatal(c.dir + ": configurePlugin failed");
    }
    return plugin;
}

void runCase(Case& c)
{
    IPluginCreatorV3One* creator = findCreator(c.plugin);
    if (creator == nullptr)
    {
        fatal("no creator for " + c.plugin);
    }
    std::string const xName = c.plugin == "W4A16Linear" ? "x" : "x_q";
    std::string const yName = c.plugin == "W4A8LinearQuantize" ? "y_q" : "y";
    DataType xType{}, yType{};
    IPluginV3* buildPlugin = buildPhase(c, creator, xType, yType);
    Runner runner(c, xType, yType);
    std::ofstream result(c.dir + "/result.txt");

    // The engine: serialized fields -> runtime plugin -> attached to a context. Steps run on the attached object.
    IPluginV3* runtimePlugin = creator->createPlugin(
        c.plugin.c_str(), capabilities(buildPlugin).runtime->getFieldsToSerialize(), TensorRTPhase::kRUNTIME);
    IPluginV3* attached
        = runtimePlugin != nullptr ? capabilities(runtimePlugin).runtime->attachToContext(nullptr) : nullptr;
    if (attached == nullptr)
    {
        fatal(c.dir + ": the runtime plugin could not be created");
    }
    int64_t shapeB = -1, shapeL = -1;
    for (Step const& s : c.steps)
    {
        IPluginV3OneRuntime* runtime = capabilities(s.mode == "build" ? buildPlugin : attached).runtime;
        std::vector<PluginTensorDesc> d = runner.descs(s.b, s.l);
        bool const changed = s.mode == "build" || s.b != shapeB || s.l != shapeL;
        if (changed && runtime->onShapeChange(d.data(), 4, &d[4], 1) != 0)
        {
            fatal(c.dir + ": onShapeChange failed at b = " + std::to_string(s.b) + ", l = " + std::to_string(s.l));
        }
        if (s.mode != "build")
        {
            shapeB = s.b;
            shapeL = s.l;
        }
        int64_t const rows = s.b * s.l;
        double us = 0.0;
        if (s.mode == "graph")
        {
            // Capture one enqueue, then replay it for each input copied into the captured buffer.
            cudaGraph_t graph{};
            cudaGraphExec_t exec{};
            CUDA_CHECK(cudaStreamBeginCapture(runner.stream(), cudaStreamCaptureModeThreadLocal));
            runner.enqueue(runtime, d);
            CUDA_CHECK(cudaStreamEndCapture(runner.stream(), &graph));
            CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
            for (std::string const& dir : s.dirs)
            {
                runner.loadInput(dir, xName, rows);
                runner.poisonOutput(rows);
                CUDA_CHECK(cudaGraphLaunch(exec, runner.stream()));
                runner.saveOutput(dir, yName, rows);
            }
            us = runner.time(runtime, d, exec);
            CUDA_CHECK(cudaGraphExecDestroy(exec));
            CUDA_CHECK(cudaGraphDestroy(graph));
        }
        else
        {
            runner.loadInput(s.dirs[0], xName, rows);
            runner.poisonOutput(rows);
            runner.enqueue(runtime, d);
            CUDA_CHECK(cudaGetLastError());
            runner.saveOutput(s.dirs[0], yName, rows);
            us = runner.time(runtime, d, nullptr);
        }
        result << s.mode << " " << s.b << " " << s.l << " " << s.dirs[0] << " median_us " << us << "\n";
        std::printf("ran %-40s %-18s %-5s b=%-2lld l=%-5lld median %9.2f us\n", c.dir.c_str(), c.plugin.c_str(),
            s.mode.c_str(), static_cast<long long>(s.b), static_cast<long long>(s.l), us);
    }
    delete attached;
    delete runtimePlugin;
    delete buildPlugin;
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
        runCase(c);
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
    if (mode == "run" && argc > 2)
    {
        return run(argc - 2, argv + 2);
    }
    std::fprintf(stderr, "usage: int4_linear_harness selftest | int4_linear_harness run CASE_DIR...\n");
    return 2;
}
