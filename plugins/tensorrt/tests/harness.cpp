// TEST ONLY: the helpers both harnesses share (harness.h): the plugin creators as TensorRT sees them, owned field
// collections, check counting, dims and data types. The modes and main: harnessMain.cpp (harness) and w4Run.cpp
// (w4_harness).
#include "harness.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace edge_quamba
{
namespace trt
{
namespace test
{
namespace
{
int gFailures = 0;
int gChecks = 0;

size_t fieldElementSize(nvinfer1::PluginFieldType type)
{
    using T = nvinfer1::PluginFieldType;
    switch (type)
    {
    case T::kFLOAT64:
    case T::kINT64: return 8;
    case T::kFLOAT32:
    case T::kINT32: return 4;
    case T::kFLOAT16:
    case T::kINT16:
    case T::kBF16: return 2;
    case T::kINT8:
    case T::kCHAR:
    case T::kUNKNOWN:
    case T::kFP8: return 1;
    case T::kDIMS: return sizeof(nvinfer1::Dims);
    default: fatal("a serialized field of type " + std::to_string(static_cast<int>(type)) + " (not copied here)");
    }
}
} // namespace

nvinfer1::IPluginCreatorV3One* findCreator(std::string const& name)
{
    int32_t n = 0;
    nvinfer1::IPluginCreatorInterface* const* creators = getCreators(n);
    for (int32_t i = 0; i < n; ++i)
    {
        if (std::strcmp(creators[i]->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") != 0)
        {
            continue;
        }
        auto* creator = static_cast<nvinfer1::IPluginCreatorV3One*>(creators[i]);
        if (name == creator->getPluginName())
        {
            return creator;
        }
    }
    return nullptr;
}

Capabilities capabilities(nvinfer1::IPluginV3* plugin)
{
    using nvinfer1::PluginCapabilityType;
    return {static_cast<nvinfer1::IPluginV3OneCore*>(plugin->getCapabilityInterface(PluginCapabilityType::kCORE)),
        static_cast<nvinfer1::IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD)),
        static_cast<nvinfer1::IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME))};
}

void Fields::addRaw(
    std::string const& name, void const* value, size_t bytes, nvinfer1::PluginFieldType type, int32_t length)
{
    auto const* p = static_cast<unsigned char const*>(value);
    names.push_back(name);
    data.emplace_back(p, p + bytes);
    types.push_back(type);
    lengths.push_back(length);
}

void Fields::addFloat(std::string const& name, float value)
{
    addRaw(name, &value, sizeof(value), nvinfer1::PluginFieldType::kFLOAT32, 1);
}

void Fields::addInt(std::string const& name, int32_t value)
{
    addRaw(name, &value, sizeof(value), nvinfer1::PluginFieldType::kINT32, 1);
}

Fields Fields::copyOf(nvinfer1::PluginFieldCollection const& collection)
{
    Fields copy;
    for (int32_t i = 0; i < collection.nbFields; ++i)
    {
        nvinfer1::PluginField const& f = collection.fields[i];
        size_t const bytes = fieldElementSize(f.type) * static_cast<size_t>(f.length < 0 ? 0 : f.length);
        copy.addRaw(f.name, f.data, f.data != nullptr ? bytes : 0, f.type, f.length);
    }
    return copy;
}

nvinfer1::PluginFieldCollection const* Fields::collection()
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

void check(bool ok, std::string const& what)
{
    ++gChecks;
    if (!ok)
    {
        ++gFailures;
        std::printf("FAIL %s\n", what.c_str());
    }
}

int checkCount()
{
    return gChecks;
}

int failureCount()
{
    return gFailures;
}

void fatal(std::string const& message)
{
    std::fflush(stdout);
    std::fprintf(stderr, "harness: %s\n", message.c_str());
    std::exit(2);
}

nvinfer1::Dims makeDims(std::vector<int64_t> const& d)
{
    nvinfer1::Dims dims{};
    dims.nbDims = static_cast<int32_t>(d.size());
    for (size_t i = 0; i < d.size(); ++i)
    {
        dims.d[i] = d[i];
    }
    return dims;
}

size_t elementSize(nvinfer1::DataType t)
{
    return t == nvinfer1::DataType::kINT8 ? 1 : t == nvinfer1::DataType::kHALF ? 2 : 4;
}

int64_t volume(nvinfer1::Dims const& d)
{
    int64_t v = 1;
    for (int32_t i = 0; i < d.nbDims; ++i)
    {
        v *= d.d[i];
    }
    return v;
}

char const* typeName(nvinfer1::DataType t)
{
    switch (t)
    {
    case nvinfer1::DataType::kFLOAT: return "float32";
    case nvinfer1::DataType::kINT8: return "int8";
    case nvinfer1::DataType::kHALF: return "float16";
    case nvinfer1::DataType::kINT32: return "int32";
    default: return "other";
    }
}

} // namespace test
} // namespace trt
} // namespace edge_quamba
