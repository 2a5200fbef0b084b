// The kernel emulator's stand-in for c10/cuda/CUDAStream.h (plugins/torch/binding.cpp built for CPU tensors).
#pragma once
#include <cuda_runtime.h>

namespace c10 {
namespace cuda {
inline cudaStream_t getCurrentCUDAStream() { return nullptr; }
}  // namespace cuda
}  // namespace c10
