// The kernel emulator's stand-in for c10/cuda/CUDAGuard.h (plugins/torch/binding.cpp built for CPU tensors).
#pragma once
#include <c10/core/Device.h>

namespace c10 {
namespace cuda {
struct CUDAGuard {
    explicit CUDAGuard(c10::Device) {}
};
}  // namespace cuda
}  // namespace c10
