// TEST ONLY: what the two parts of w4_harness share (w4Selftest.cpp: host-side interface checks of the 4-bit
// configs' plugins; w4Run.cpp: `run`, the plugins in TensorRT's call order on a GPU, and main). See w4Run.cpp.
#pragma once

#include "caseFiles.h"
#include "harness.h"
#include "testExprBuilder.h"

#include <cstdio>
#include <string>
#include <vector>

namespace edge_quamba
{
namespace trt
{
namespace w4test
{
using namespace nvinfer1;
using edge_quamba::trt::test::TestExprBuilder;

// The helpers both harnesses share (harness.h, harness.cpp: creators, capabilities, owned fields, check counting,
// fatal, dims and sizes) and the raw case files (caseFiles.cpp: readFile, writeFile).
using test::Capabilities;
using test::capabilities;
using test::check;
using test::checkCount;
using test::elementSize;
using test::failureCount;
using test::fatal;
using test::Fields;
using test::findCreator;
using test::makeDims;
using test::readFile;
using test::volume;
using test::writeFile;

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
