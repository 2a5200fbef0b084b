// Umbrella header: every launcher of the edge-quamba int8 and 4-bit-weight kernels (see README.md in this folder).
#pragma once

#include "causal_conv1d.h"
#include "hadamard_quantize.h"
#include "int4_linear.h"
#include "int8_linear.h"
#include "quantize.h"
#include "rms_norm_quantize.h"
#include "selective_scan.h"
#include "ssd_scan.h"
