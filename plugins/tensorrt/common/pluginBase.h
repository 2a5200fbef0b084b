// The parts of an edge-quamba IPluginV3 that follow from its op spec alone, written once for all plugins: names,
// fields (their parsing, validation and serialization), output dtypes, output shapes, the supported formats and the
// shape checks. Each plugin derives from PluginBase<Spec, Op> and adds what is its own: checkSizes (limits of its
// kernel, and relations between dims that its fields set, e.g. the int4 group count) and enqueue (a call of its
// plugins/kernels launcher).
//
// Capabilities: IPluginV3OneCore, IPluginV3OneBuild (no I/O aliasing: the states go out through separate output
// tensors, the runtime ping-pongs them) and IPluginV3OneRuntime, as TensorRT 10.1+ and 11.x expect.
//
// Formats: every tensor is kLINEAR (row-major, contiguous) in the dtype the spec gives it (int8, fp16 or fp32).
// There is no other variant: the kernels read and write exactly the spec's dtypes, and the network is strongly
// typed.
#pragma once

#include "pluginCommon.h"

#include <NvInferRuntime.h>

#include <array>
#include <exception>

namespace edge_quamba
{
namespace trt
{

namespace detail
{
constexpr bool onlyFloat32AndInt32(nvinfer1::PluginFieldType const* types, int32_t n)
{
    return n == 0
        || ((types[0] == nvinfer1::PluginFieldType::kFLOAT32 || types[0] == nvinfer1::PluginFieldType::kINT32)
            && onlyFloat32AndInt32(types + 1, n - 1));
}
} // namespace detail

template <class Spec, class Op>
class PluginBase : public nvinfer1::IPluginV3,
                   public nvinfer1::IPluginV3OneCore,
                   public nvinfer1::IPluginV3OneBuild,
                   public nvinfer1::IPluginV3OneRuntime
{
    static_assert(detail::onlyFloat32AndInt32(Spec::kFIELD_TYPES, Spec::kNB_FIELDS),
        "every field is a float32 scale or an int32 layout constant");

public:
    //! The float32 fields (scales, finite and > 0) by field index, in spec order; unused at int32 fields.
    using Fields = std::array<float, Spec::kNB_FIELDS>;
    //! The int32 fields (layout constants, >= 1) by field index; unused at float32 fields.
    using IntFields = std::array<int32_t, Spec::kNB_FIELDS>;

    explicit PluginBase(Fields const& fields, IntFields const& intFields = IntFields{}) noexcept
        : mFields(fields)
        , mIntFields(intFields)
    {
    }

    PluginBase(PluginBase const& other) noexcept
        : mFields(other.mFields)
        , mIntFields(other.mIntFields)
    {
    }

    PluginBase& operator=(PluginBase const&) = delete;

    ~PluginBase() override = default;

    Fields const& fields() const noexcept
    {
        return mFields;
    }

    IntFields const& intFields() const noexcept
    {
        return mIntFields;
    }

    // IPluginV3 -------------------------------------------------------------------------------------------------

    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override
    {
        switch (type)
        {
        case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
        case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
        case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
        }
        return nullptr;
    }

    nvinfer1::IPluginV3* clone() noexcept override
    {
        try
        {
            return new Op(static_cast<Op const&>(*this));
        }
        catch (std::exception const& e)
        {
            logError(Spec::kNAME, e.what());
            return nullptr;
        }
    }

    // IPluginV3OneCore ------------------------------------------------------------------------------------------

    char const* getPluginName() const noexcept override
    {
        return Spec::kNAME;
    }

    char const* getPluginVersion() const noexcept override
    {
        return Spec::kVERSION;
    }

    char const* getPluginNamespace() const noexcept override
    {
        return Spec::kNAMESPACE;
    }

    // IPluginV3OneBuild -----------------------------------------------------------------------------------------

    int32_t getNbOutputs() const noexcept override
    {
        return Spec::kNB_OUTPUTS;
    }

    //! The spec's output dtypes; the inputs must have the spec's dtypes (strongly typed network).
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override
    {
        if (!checkCounts(nbInputs, nbOutputs) || outputTypes == nullptr || inputTypes == nullptr)
        {
            return 1;
        }
        for (int32_t i = 0; i < nbInputs; ++i)
        {
            if (inputTypes[i] != Spec::kINPUT_TYPES[i])
            {
                logError(Spec::kNAME, std::string("input '") + Spec::kINPUT_NAMES[i] + "' has data type "
                        + std::to_string(static_cast<int32_t>(inputTypes[i])) + ", expected "
                        + std::to_string(static_cast<int32_t>(Spec::kINPUT_TYPES[i])));
                return 1;
            }
        }
        for (int32_t i = 0; i < nbOutputs; ++i)
        {
            outputTypes[i] = Spec::kOUTPUT_TYPES[i];
        }
        return 0;
    }

    //! Each output dim is the expression of the input dim with the same shape symbol (spec::kOUTPUT_DIM_SOURCES),
    //! passed through unchanged. Constant dims sharing a symbol must agree.
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
        nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs,
        int32_t nbOutputs, nvinfer1::IExprBuilder& /*exprBuilder*/) noexcept override
    {
        if (!checkCounts(nbInputs, nbOutputs) || nbShapeInputs != 0 || inputs == nullptr || outputs == nullptr)
        {
            return 1;
        }
        SymbolValues sym = unknownSymbols();
        nvinfer1::Dims constants[Spec::kNB_INPUTS];
        nvinfer1::Dims const* dims[Spec::kNB_INPUTS];
        for (int32_t i = 0; i < nbInputs; ++i)
        {
            constants[i].nbDims = inputs[i].nbDims;
            for (int32_t d = 0; d < inputs[i].nbDims && d < nvinfer1::Dims::MAX_DIMS; ++d)
            {
                constants[i].d[d] = inputs[i].d[d]->isConstant() ? inputs[i].d[d]->getConstantValue() : -1;
            }
            dims[i] = &constants[i];
        }
        if (!checkSymbols(Spec::kNAME, "input", nbInputs, Spec::kINPUT_NAMES, Spec::kINPUT_RANKS, Spec::kINPUT_DIMS,
                dims, sym)
            || !self().checkSizes(sym))
        {
            return 1;
        }
        for (int32_t o = 0; o < nbOutputs; ++o)
        {
            outputs[o].nbDims = Spec::kOUTPUT_RANKS[o];
            for (int32_t d = 0; d < Spec::kOUTPUT_RANKS[o]; ++d)
            {
                outputs[o].d[d] = inputs[Spec::kOUTPUT_DIM_SOURCES[o][d][0]].d[Spec::kOUTPUT_DIM_SOURCES[o][d][1]];
            }
        }
        return 0;
    }

    bool supportsFormatCombination(
        int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
        override
    {
        if (!checkCounts(nbInputs, nbOutputs) || inOut == nullptr || pos < 0 || pos >= nbInputs + nbOutputs)
        {
            return false;
        }
        nvinfer1::DataType const want
            = pos < nbInputs ? Spec::kINPUT_TYPES[pos] : Spec::kOUTPUT_TYPES[pos - nbInputs];
        return inOut[pos].desc.format == nvinfer1::TensorFormat::kLINEAR && inOut[pos].desc.type == want;
    }

    //! Build time: dims may hold -1; min and max of the profile are checked as well.
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override
    {
        if (!checkCounts(nbInputs, nbOutputs) || in == nullptr || out == nullptr)
        {
            return 1;
        }
        nvinfer1::Dims const* inDims[Spec::kNB_INPUTS];
        nvinfer1::Dims const* outDims[Spec::kNB_OUTPUTS];
        for (auto member : {&nvinfer1::DynamicPluginTensorDesc::min, &nvinfer1::DynamicPluginTensorDesc::max})
        {
            for (int32_t i = 0; i < nbInputs; ++i)
            {
                inDims[i] = &(in[i].*member);
            }
            for (int32_t o = 0; o < nbOutputs; ++o)
            {
                outDims[o] = &(out[o].*member);
            }
            if (!checkAll(inDims, outDims))
            {
                return 1;
            }
        }
        for (int32_t i = 0; i < nbInputs; ++i)
        {
            inDims[i] = &in[i].desc.dims;
        }
        for (int32_t o = 0; o < nbOutputs; ++o)
        {
            outDims[o] = &out[o].desc.dims;
        }
        return checkAll(inDims, outDims) ? 0 : 1;
    }

    // IPluginV3OneRuntime ---------------------------------------------------------------------------------------

    //! Runtime: every dim is known; shapes and dtypes are checked once here, so enqueue only reads dims.
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs) noexcept override
    {
        if (!checkCounts(nbInputs, nbOutputs) || in == nullptr || out == nullptr)
        {
            return 1;
        }
        nvinfer1::Dims const* inDims[Spec::kNB_INPUTS];
        nvinfer1::Dims const* outDims[Spec::kNB_OUTPUTS];
        for (int32_t i = 0; i < nbInputs; ++i)
        {
            inDims[i] = &in[i].dims;
            if (in[i].type != Spec::kINPUT_TYPES[i] || in[i].format != nvinfer1::TensorFormat::kLINEAR)
            {
                logError(Spec::kNAME, std::string("input '") + Spec::kINPUT_NAMES[i] + "' has the wrong type/format");
                return 1;
            }
        }
        for (int32_t o = 0; o < nbOutputs; ++o)
        {
            outDims[o] = &out[o].dims;
            if (out[o].type != Spec::kOUTPUT_TYPES[o] || out[o].format != nvinfer1::TensorFormat::kLINEAR)
            {
                logError(Spec::kNAME, std::string("output '") + Spec::kOUTPUT_NAMES[o] + "' has the wrong type/format");
                return 1;
            }
        }
        return checkAll(inDims, outDims, /*allKnown=*/true) ? 0 : 1;
    }

    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept override
    {
        return clone(); // no per-context resources
    }

    //! The fields exactly as createPlugin reads them (names and types of the spec, length 1): the engine stores
    //! these, and deserialization goes through the same validation as the build.
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override
    {
        for (int32_t f = 0; f < Spec::kNB_FIELDS; ++f)
        {
            bool const isInt = Spec::kFIELD_TYPES[f] == nvinfer1::PluginFieldType::kINT32;
            void const* data = isInt ? static_cast<void const*>(&mIntFields[f]) : static_cast<void const*>(&mFields[f]);
            mSerialized[f] = nvinfer1::PluginField(Spec::kFIELD_NAMES[f], data, Spec::kFIELD_TYPES[f], 1);
        }
        mCollection.nbFields = Spec::kNB_FIELDS;
        mCollection.fields = mSerialized.data();
        return &mCollection;
    }

protected:
    Fields mFields;
    IntFields mIntFields;

private:
    //! The derived plugin, for its checkSizes (static in plugins whose limits need no field, a member otherwise).
    Op const& self() const noexcept
    {
        return static_cast<Op const&>(*this);
    }

    static SymbolValues unknownSymbols() noexcept
    {
        SymbolValues sym;
        for (int64_t& v : sym.v)
        {
            v = kUNKNOWN_DIM;
        }
        return sym;
    }

    static bool checkCounts(int32_t nbInputs, int32_t nbOutputs) noexcept
    {
        if (nbInputs != Spec::kNB_INPUTS || nbOutputs != Spec::kNB_OUTPUTS)
        {
            logError(Spec::kNAME, "expects " + std::to_string(Spec::kNB_INPUTS) + " inputs and "
                    + std::to_string(Spec::kNB_OUTPUTS) + " outputs, got " + std::to_string(nbInputs) + " and "
                    + std::to_string(nbOutputs));
            return false;
        }
        return true;
    }

    bool checkAll(nvinfer1::Dims const* const* inDims, nvinfer1::Dims const* const* outDims,
        bool allKnown = false) const noexcept
    {
        SymbolValues sym = unknownSymbols();
        if (!checkSymbols(Spec::kNAME, "input", Spec::kNB_INPUTS, Spec::kINPUT_NAMES, Spec::kINPUT_RANKS,
                Spec::kINPUT_DIMS, inDims, sym)
            || !checkSymbols(Spec::kNAME, "output", Spec::kNB_OUTPUTS, Spec::kOUTPUT_NAMES, Spec::kOUTPUT_RANKS,
                Spec::kOUTPUT_DIMS, outDims, sym))
        {
            return false;
        }
        if (allKnown)
        {
            for (int32_t s = 0; s < spec::kNB_SYMBOLS; ++s)
            {
                if (sym.v[s] == kUNKNOWN_DIM && usesSymbol(s))
                {
                    logError(Spec::kNAME, std::string("dimension ") + spec::kSYMBOL_NAMES[s] + " is unknown at runtime");
                    return false;
                }
            }
        }
        return self().checkSizes(sym);
    }

    static bool usesSymbol(int32_t s) noexcept
    {
        for (int32_t i = 0; i < Spec::kNB_INPUTS; ++i)
        {
            for (int32_t d = 0; d < Spec::kINPUT_RANKS[i]; ++d)
            {
                if (Spec::kINPUT_DIMS[i][d] == s)
                {
                    return true;
                }
            }
        }
        return false;
    }

    std::array<nvinfer1::PluginField, Spec::kNB_FIELDS> mSerialized{};
    nvinfer1::PluginFieldCollection mCollection{};
};

//! The creator of Op: declares the spec's fields (what the ONNX parser looks up by name) and builds the plugin
//! from them, validating each, in both phases (kBUILD: from the ONNX attributes; kRUNTIME: from the fields the
//! engine stored with getFieldsToSerialize).
template <class Spec, class Op>
class CreatorBase : public nvinfer1::IPluginCreatorV3One
{
public:
    CreatorBase() noexcept
    {
        for (int32_t f = 0; f < Spec::kNB_FIELDS; ++f)
        {
            mDeclared[f] = nvinfer1::PluginField(Spec::kFIELD_NAMES[f], nullptr, Spec::kFIELD_TYPES[f], 1);
        }
        mCollection.nbFields = Spec::kNB_FIELDS;
        mCollection.fields = mDeclared.data();
    }

    nvinfer1::IPluginV3* createPlugin(
        char const* /*name*/, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase /*phase*/) noexcept
        override
    {
        typename Op::Fields fields{};
        typename Op::IntFields intFields{};
        if (!readFields(Spec::kNAME, Spec::kFIELD_NAMES, Spec::kFIELD_TYPES, Spec::kNB_FIELDS, fc, fields.data(),
                intFields.data()))
        {
            return nullptr;
        }
        try
        {
            return new Op(fields, intFields);
        }
        catch (std::exception const& e)
        {
            logError(Spec::kNAME, e.what());
            return nullptr;
        }
    }

    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override
    {
        return &mCollection;
    }

    char const* getPluginName() const noexcept override
    {
        return Spec::kNAME;
    }

    char const* getPluginVersion() const noexcept override
    {
        return Spec::kVERSION;
    }

    char const* getPluginNamespace() const noexcept override
    {
        return Spec::kNAMESPACE;
    }

private:
    std::array<nvinfer1::PluginField, Spec::kNB_FIELDS> mDeclared{};
    nvinfer1::PluginFieldCollection mCollection{};
};

} // namespace trt
} // namespace edge_quamba
