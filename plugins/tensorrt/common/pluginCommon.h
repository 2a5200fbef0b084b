// Shared by the edge-quamba TensorRT plugins: error reporting, plugin-field parsing and validation, and the
// shape checks driven by the op specs (opSpecs.h, generated from edge_quamba/ops/specs.py).
//
// Nothing here calls into libnvinfer: only the TensorRT headers' types and inline/virtual members are used, so the
// plugins build (and the test harness runs their interfaces) without the TensorRT libraries.
#pragma once

#include "opSpecs.h"

#include <NvInferRuntime.h>

#include <cstdint>
#include <string>

namespace edge_quamba
{
namespace trt
{

//! Route plugin errors to TensorRT's logger (trtexec / the builder call setLoggerFinder when they load the
//! library); without one they go to stderr. Never throws.
void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;

//! One line "<plugin>: <message>" at kERROR severity.
void logError(char const* plugin, char const* message) noexcept;
void logError(char const* plugin, std::string const& message) noexcept;

//! Read the plugin fields named ``names[0..nbNames)`` from ``fc``. Every name must appear exactly once, of length 1
//! and of its declared type ``types[j]`` (how the ONNX parser passes a FLOAT / INT attribute, and how
//! getFieldsToSerialize writes it): a kFLOAT32 field is a quantization scale, finite and > 0, stored in
//! ``floats[j]``; a kINT32 field is a layout constant (the int4 group size), >= 1, stored in ``ints[j]``. Unknown
//! names are errors too: the parser only passes fields the creator declares, so an unknown one is a caller bug.
//! Returns false after logging the first problem.
bool readFields(char const* plugin, char const* const* names, nvinfer1::PluginFieldType const* types, int32_t nbNames,
    nvinfer1::PluginFieldCollection const* fc, float* floats, int32_t* ints) noexcept;

//! Value of each shape symbol (spec::kSYM_*), or kUNKNOWN_DIM where no tensor fixed it yet.
constexpr int64_t kUNKNOWN_DIM = -1;
struct SymbolValues
{
    int64_t v[spec::kNB_SYMBOLS];
};

//! Check that ``nb`` tensors with dims ``dims`` (TensorRT's -1 = unknown at build time) have the spec's ranks and
//! that every dimension carrying the same shape symbol has the same value; unknown dims are skipped. Fills ``sym``
//! (which may already hold values from other tensors). ``what`` names the tensors in messages ("input"/"output").
bool checkSymbols(char const* plugin, char const* what, int32_t nb, char const* const* names, int32_t const* ranks,
    int32_t const (*symDims)[spec::kMAX_RANK], nvinfer1::Dims const* const* dims, SymbolValues& sym) noexcept;

//! 0 after a successful launch; otherwise logs the CUDA error and returns 1 (what enqueue returns to TensorRT).
int32_t reportLaunch(char const* plugin, cudaError_t status) noexcept;

//! Product of dims [0, end): the number of rows of a row-major tensor whose last (rank - end) dims form a row.
int64_t leadingVolume(nvinfer1::Dims const& dims, int32_t end) noexcept;

} // namespace trt
} // namespace edge_quamba
