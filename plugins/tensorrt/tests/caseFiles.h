// TEST ONLY: the case folders of make_cases.py as the harness reads them (its docstring gives the format).
#pragma once

#include "harness.h"

#include <array>
#include <string>
#include <utility>
#include <vector>

namespace edge_quamba
{
namespace trt
{
namespace test
{

//! One `input` or `output` line of step.txt: a raw row-major tensor file in the step folder.
struct Tensor
{
    std::string name;
    nvinfer1::DataType type;
    nvinfer1::Dims dims;
    std::string file;
};

//! One step folder: a call at one shape (make_cases.py says what each mode means).
struct Step
{
    std::string mode; // build | shape | graph
    std::string dir;  // the case folder + "/" + the step folder
    std::vector<Tensor> inputs;
    std::vector<Tensor> outputs;
};

//! A `profile` line: the min/opt/max of one dynamic dim (b or l).
struct Range
{
    bool dynamic = false;
    int64_t min = 0;
    int64_t opt = 0;
    int64_t max = 0;
};

//! One case folder: a plugin's fields, its profile, which state outputs may be written in place, its steps.
struct Case
{
    std::string dir;
    std::string plugin;
    Fields fields;
    std::array<Range, spec::kNB_SYMBOLS> profile{};
    std::vector<std::pair<int32_t, int32_t>> aliases; // (output, input)
    std::vector<Step> steps;
};

//! A value per shape symbol (spec::kSYM_*), -1 where unknown.
using Symbols = std::array<int64_t, spec::kNB_SYMBOLS>;

//! case.txt and every step's step.txt of one case folder; a malformed file is fatal.
Case readCase(std::string const& dir);

//! Exactly ``bytes`` bytes of a file (fatal otherwise).
std::vector<char> readFile(std::string const& path, size_t bytes);
void writeFile(std::string const& path, void const* data, size_t bytes);

} // namespace test
} // namespace trt
} // namespace edge_quamba
