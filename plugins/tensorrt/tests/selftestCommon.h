// TEST ONLY: the host-side checks every plugin gets in both selftests (selftest.cpp: the int8 plugins;
// w4Selftest.cpp: the 4-bit configs' plugins): the creator as TensorRT's registry sees it, and a plugin's life
// around its fields (serialization round trip, clone, attachToContext). Spec is an op spec of common/opSpecs.h.
#pragma once

#include "harness.h"

#include <cstring>
#include <string>

namespace edge_quamba
{
namespace trt
{
namespace test
{

//! The V3One creator of Spec with its version, namespace and declared fields (each one value of its spec's type),
//! or nullptr (counted as a failure) when getCreators does not list it.
template <class Spec>
nvinfer1::IPluginCreatorV3One* checkedCreator()
{
    std::string const op = Spec::kNAME;
    nvinfer1::IPluginCreatorV3One* creator = findCreator(op);
    check(creator != nullptr, op + ": getCreators lists a V3One creator");
    if (creator == nullptr)
    {
        return nullptr;
    }
    check(std::string(creator->getPluginVersion()) == Spec::kVERSION, op + ": creator version");
    check(std::string(creator->getPluginNamespace()) == Spec::kNAMESPACE, op + ": creator namespace");
    nvinfer1::PluginFieldCollection const* declared = creator->getFieldNames();
    check(declared != nullptr && declared->nbFields == Spec::kNB_FIELDS, op + ": getFieldNames count");
    for (int32_t i = 0; declared != nullptr && i < declared->nbFields && i < Spec::kNB_FIELDS; ++i)
    {
        check(std::string(declared->fields[i].name) == Spec::kFIELD_NAMES[i]
                && declared->fields[i].type == Spec::kFIELD_TYPES[i] && declared->fields[i].length == 1,
            op + ": declared field " + Spec::kFIELD_NAMES[i]);
    }
    return creator;
}

//! ``plugin``'s stored fields rebuild, in the runtime phase, a plugin that stores the same fields bit for bit as
//! ``fields`` (every field one 4-byte value: kFLOAT32 or kINT32); clone and attachToContext give plugins.
template <class Spec>
void checkRoundTripCloneAttach(
    nvinfer1::IPluginCreatorV3One* creator, nvinfer1::IPluginV3* plugin, Fields const& fields, std::string const& op)
{
    Capabilities const cap = capabilities(plugin);
    nvinfer1::PluginFieldCollection const* stored = cap.runtime->getFieldsToSerialize();
    nvinfer1::IPluginV3* restored = creator->createPlugin(op.c_str(), stored, nvinfer1::TensorRTPhase::kRUNTIME);
    check(restored != nullptr, op + ": createPlugin(kRUNTIME) accepts getFieldsToSerialize's fields");
    if (restored != nullptr)
    {
        nvinfer1::PluginFieldCollection const* again = capabilities(restored).runtime->getFieldsToSerialize();
        bool same = again->nbFields == Spec::kNB_FIELDS;
        for (int32_t i = 0; same && i < Spec::kNB_FIELDS; ++i)
        {
            same = std::string(again->fields[i].name) == Spec::kFIELD_NAMES[i]
                && again->fields[i].type == Spec::kFIELD_TYPES[i] && again->fields[i].length == 1
                && std::memcmp(again->fields[i].data, fields.data[i].data(), 4) == 0;
        }
        check(same, op + ": serialization round trip is exact");
        delete restored;
    }
    nvinfer1::IPluginV3* copy = plugin->clone();
    check(copy != nullptr && capabilities(copy).core != nullptr, op + ": clone");
    delete copy;
    nvinfer1::IPluginV3* attached = cap.runtime->attachToContext(nullptr);
    check(attached != nullptr, op + ": attachToContext");
    delete attached;
}

} // namespace test
} // namespace trt
} // namespace edge_quamba
