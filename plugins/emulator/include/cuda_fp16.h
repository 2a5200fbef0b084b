// __half for the kernel emulator (plugins/emulator): the bits of an IEEE binary16 and an exact conversion to float.
#pragma once
#include <cstdint>
#include <cstring>

struct __half {
    uint16_t bits;
};

inline float __half2float(__half h) {
    const uint32_t sign = (h.bits >> 15) & 1u, exp = (h.bits >> 10) & 0x1fu, man = h.bits & 0x3ffu;
    uint32_t f;
    if (exp == 0 && man == 0) {
        f = sign << 31;
    } else if (exp == 0) {  // subnormal: normalize
        int shift = 0;
        uint32_t m = man;
        while (!(m & 0x400u)) {
            m <<= 1;
            ++shift;
        }
        f = (sign << 31) | (uint32_t(127 - 15 + 1 - shift) << 23) | ((m & 0x3ffu) << 13);
    } else if (exp == 31) {
        f = (sign << 31) | 0x7f800000u | (man << 13);
    } else {
        f = (sign << 31) | ((exp + 112) << 23) | (man << 13);
    }
    float out;
    std::memcpy(&out, &f, 4);
    return out;
}
