// TEST ONLY: what the two parts of w4_harness share (w4Selftest.cpp: host-side interface checks of the 4-bit
// configs' plugins; w4Run.cpp: `run`, the plugins in TensorRT's call order on a GPU, and main). See w4Run.cpp.
#pragma once

#include "common/opSpecs.h"
#include "testExprBuilder.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

extern "C" nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators);

namespace edge_quamba
{
namespace trt
{
namespace w4test
{
using namespace nvinfer1;
using edge_quamba::trt::test::TestExprBuilder;

// ---- helpers ------------------------------------------------------------------------------------------------

inline IPluginCreatorV3One* findCreator(std::string const& name)
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

inline Capabilities capabilities(IPluginV3* plugin)
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

inline int gFailures = 0;
inline int gChecks = 0;

inline void check(bool ok, std::string const& what)
{
    ++gChecks;
    if (!ok)
    {
        ++gFailures;
        std::printf("FAIL %s\n", what.c_str());
    }
}

[[noreturn]] inline void fatal(std::string const& message)
{
    std::fprintf(stderr, "int4_linear_harness: %s\n", message.c_str());
    std::exit(2);
}

inline Dims makeDims(std::vector<int64_t> const& d)
{
    Dims dims{};
    dims.nbDims = static_cast<int32_t>(d.size());
    for (size_t i = 0; i < d.size(); ++i)
    {
        dims.d[i] = d[i];
    }
    return dims;
}

inline size_t elementSize(DataType t)
{
    return t == DataType::kINT8 ? 1 : t == DataType::kHALF ? 2 : 4;
}

inline int64_t volume(Dims const& d)
{
    int64_t v = 1;
    for (int32_t i = 0; i < d.nbDims; ++i)
    {
        v *= d.d[i];
    }
    return v;
}

//! The linear's tensors at (b, l, K, N, G): inputs x, weight_packed, weight_scale, bias; output y.
inline std::vector<Dims> linearDims(int64_t b, int64_t l, int64_t k, int64_t n, int64_t groups)
{
    return {makeDims({b, l, k}), makeDims({n, (k + 1) / 2}), makeDims({n, groups}), makeDims({n}),
        makeDims({b, l, n})};
}

//! The host-side checks (w4Selftest.cpp); returns the exit status.
int selftest();

} // namespace w4test
} // namespace trt
} // namespace edge_quamba
