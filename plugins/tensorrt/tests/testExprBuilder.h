// TEST ONLY: an IExprBuilder for calling IPluginV3OneBuild::getOutputShapes without libnvinfer.
//
// TensorRT's IDimensionExpr / IExprBuilder are thin shells over the abstract apiv::VDimensionExpr / VExprBuilder of
// NvInferImpl.h (the shells' members are inline and only forward to mImpl), so implementing the two apiv classes is
// enough to give a plugin the builder TensorRT would. Expressions are either constants or opaque symbols (a
// runtime dimension); operations on two constants fold, anything else makes a new symbol. Never use this outside
// tests: TensorRT's header says not to derive from these classes, because their layout is not a stable ABI.
#pragma once

#include <NvInferRuntime.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

namespace edge_quamba
{
namespace trt
{
namespace test
{

class TestDimExpr final : public nvinfer1::IDimensionExpr
{
public:
    TestDimExpr(bool constant, int64_t value)
        : mValue(constant, value)
    {
        mImpl = &mValue;
    }

    ~TestDimExpr() noexcept override = default;

private:
    struct Value final : nvinfer1::apiv::VDimensionExpr
    {
        Value(bool c, int64_t v)
            : constant(c)
            , value(v)
        {
        }
        bool isConstant() const override
        {
            return constant;
        }
        int64_t getConstantValue() const override
        {
            return constant ? value : std::numeric_limits<int64_t>::min();
        }
        bool isSizeTensor() const override
        {
            return false;
        }
        bool constant;
        int64_t value;
    };
    Value mValue;
};

class TestExprBuilder final : public nvinfer1::IExprBuilder
{
public:
    TestExprBuilder()
    {
        mImpl = &mBuilder;
    }

    ~TestExprBuilder() noexcept override = default;

    //! A runtime (non-constant) dimension, as TensorRT passes for a dynamic axis.
    nvinfer1::IDimensionExpr const* symbol()
    {
        return mBuilder.make(false, 0);
    }

private:
    struct Builder final : nvinfer1::apiv::VExprBuilder
    {
        nvinfer1::IDimensionExpr const* make(bool constant, int64_t value)
        {
            pool.push_back(std::make_unique<TestDimExpr>(constant, value));
            return pool.back().get();
        }
        nvinfer1::IDimensionExpr const* constant(int64_t value) override
        {
            return make(true, value);
        }
        nvinfer1::IDimensionExpr const* operation(nvinfer1::DimensionOperation op,
            nvinfer1::IDimensionExpr const& a, nvinfer1::IDimensionExpr const& b) override
        {
            if (!a.isConstant() || !b.isConstant())
            {
                return make(false, 0);
            }
            int64_t const x = a.getConstantValue();
            int64_t const y = b.getConstantValue();
            using Op = nvinfer1::DimensionOperation;
            switch (op)
            {
            case Op::kSUM: return make(true, x + y);
            case Op::kPROD: return make(true, x * y);
            case Op::kMAX: return make(true, std::max(x, y));
            case Op::kMIN: return make(true, std::min(x, y));
            case Op::kSUB: return make(true, x - y);
            case Op::kEQUAL: return make(true, x == y ? 1 : 0);
            case Op::kLESS: return make(true, x < y ? 1 : 0);
            case Op::kFLOOR_DIV: return y == 0 ? nullptr : make(true, x / y - ((x % y != 0) && ((x < 0) != (y < 0))));
            case Op::kCEIL_DIV: return y == 0 ? nullptr : make(true, x / y + ((x % y != 0) && ((x < 0) == (y < 0))));
            }
            return nullptr;
        }
        nvinfer1::IDimensionExpr const* declareSizeTensor(
            int32_t, nvinfer1::IDimensionExpr const&, nvinfer1::IDimensionExpr const&) override
        {
            return make(false, 0);
        }
        std::vector<std::unique_ptr<TestDimExpr>> pool;
    };
    Builder mBuilder;
};

} // namespace test
} // namespace trt
} // namespace edge_quamba
