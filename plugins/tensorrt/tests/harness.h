// TEST ONLY: what the harness's parts share (harness.cpp: main and these helpers; selftest.cpp: the host-side interface
// checks and `describe`; trtOrder.cpp: `run`, the plugins driven in TensorRT's call order on a GPU, reading the cases
// with caseFiles.cpp and moving data with deviceIo.cpp).
#pragma once

#include "common/opSpecs.h"
#include "testExprBuilder.h"

#include <NvInferRuntime.h>

#include <cstdint>
#include <string>
#include <vector>

extern "C" nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators);

namespace edge_quamba
{
namespace trt
{
namespace test
{

//! The V3One creator registered under ``name`` (what getCreators lists, as TensorRT's registry sees it), or nullptr.
nvinfer1::IPluginCreatorV3One* findCreator(std::string const& name);

struct Capabilities
{
    nvinfer1::IPluginV3OneCore* core;
    nvinfer1::IPluginV3OneBuild* build;
    nvinfer1::IPluginV3OneRuntime* runtime;
};

//! The three capability interfaces of a plugin (nullptr where it declines one).
Capabilities capabilities(nvinfer1::IPluginV3* plugin);

//! Owns the storage a PluginFieldCollection points into (names and value bytes are copied in).
struct Fields
{
    std::vector<std::string> names;
    std::vector<std::vector<unsigned char>> data;
    std::vector<nvinfer1::PluginFieldType> types;
    std::vector<int32_t> lengths;
    std::vector<nvinfer1::PluginField> fields;
    nvinfer1::PluginFieldCollection fc{};

    void addRaw(std::string const& name, void const* value, size_t bytes, nvinfer1::PluginFieldType type,
        int32_t length);
    void addFloat(std::string const& name, float value);
    void addInt(std::string const& name, int32_t value);
    //! A deep copy of a collection: what an engine keeps of getFieldsToSerialize() after the plugin is gone.
    static Fields copyOf(nvinfer1::PluginFieldCollection const& collection);
    nvinfer1::PluginFieldCollection const* collection();
};

//! Count a check; print "FAIL what" when it does not hold.
void check(bool ok, std::string const& what);
int checkCount();
int failureCount();

//! Print "harness: message" on stderr and exit with status 2 (a step that cannot go on).
[[noreturn]] void fatal(std::string const& message);

nvinfer1::Dims makeDims(std::vector<int64_t> const& d);
size_t elementSize(nvinfer1::DataType t);
int64_t volume(nvinfer1::Dims const& d);
char const* typeName(nvinfer1::DataType t);

//! TEST ONLY: the IPluginResourceContext that TensorRT hands attachToContext (one per execution context). It has
//! no GPU allocator or error recorder to give (nullptr: the plugins use neither) and counts the plugin's requests.
//! TensorRT's header says not to derive from this class (no public constructor); a test stub is the exception.
class StubResourceContext final : public nvinfer1::IPluginResourceContext
{
public:
    StubResourceContext() = default;
    ~StubResourceContext() noexcept override = default;

    nvinfer1::IGpuAllocator* getGpuAllocator() const noexcept override
    {
        ++mRequests;
        return nullptr;
    }
    nvinfer1::IErrorRecorder* getErrorRecorder() const noexcept override
    {
        ++mRequests;
        return nullptr;
    }
    int32_t requests() const noexcept
    {
        return mRequests;
    }

private:
    mutable int32_t mRequests = 0;
};

//! The modes (main in harness.cpp dispatches).
int selftest();
int describe();
//! `run`: each case folder of make_cases.py in TensorRT's call order; ``device`` false is the dry run (every
//! interface call, no CUDA call: cases check on a machine without a GPU); ``timing`` adds cudaEvent timings.
int runCases(std::vector<std::string> const& dirs, bool device, bool timing);

} // namespace test
} // namespace trt
} // namespace edge_quamba
