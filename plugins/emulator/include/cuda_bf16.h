// __nv_bfloat16 for the kernel emulator (plugins/emulator): the top 16 bits of a float32.
#pragma once
#include <cstdint>
#include <cstring>

struct __nv_bfloat16 {
    uint16_t bits;
};

inline float __bfloat162float(__nv_bfloat16 h) {
    const uint32_t f = uint32_t(h.bits) << 16;
    float out;
    std::memcpy(&out, &f, 4);
    return out;
}
