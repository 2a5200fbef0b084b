// Generated from edge_quamba/ops/specs.py by `python3 -m edge_quamba.ops.plugins --header`; do not edit.
// Each op spec as constants: names, plugin fields (the ONNX attributes, same names, length 1: kFLOAT32
// scales, kINT32 layout constants), input/output dtypes (linear format), ranks, the shape symbol of every
// dimension (kNO_SYM pads) and where each output dimension comes from.
#pragma once

#include <NvInferRuntime.h>

#include <cstdint>

namespace edge_quamba
{
namespace trt
{
namespace spec
{

//! Shape symbols of the specs (glossary: edge_quamba.models.mamba).
constexpr int32_t kNO_SYM = -1;
constexpr int32_t kSYM_B = 0;
constexpr int32_t kSYM_L = 1;
constexpr int32_t kSYM_D_IN = 2;
constexpr int32_t kSYM_K = 3;
constexpr int32_t kSYM_N = 4;
constexpr int32_t kSYM_IN_FEATURES = 5;
constexpr int32_t kSYM_OUT_FEATURES = 6;
constexpr int32_t kSYM_PACKED = 7;
constexpr int32_t kSYM_GROUPS = 8;
constexpr int32_t kSYM_CONV_DIM = 9;
constexpr int32_t kSYM_H = 10;
constexpr int32_t kSYM_GN = 11;
constexpr int32_t kSYM_P = 12;
constexpr int32_t kNB_SYMBOLS = 13;
constexpr char const* kSYMBOL_NAMES[kNB_SYMBOLS] = {"b", "l", "d_in", "k", "n", "in_features", "out_features", "packed", "groups", "conv_dim", "h", "gn", "p"};
constexpr int32_t kMAX_RANK = 4;

//! Depthwise causal conv1d on int8 x continuing from an int8 state, exact int32 accumulate, * (x_scale * weight_scale) + bias, SiLU, requantized to int8 at out_scale; the state is the last k inputs.
struct Int8CausalConv1d
{
    static constexpr char const* kNAME = "Int8CausalConv1d";
    static constexpr char const* kVERSION = "1";
    static constexpr char const* kNAMESPACE = "";
    static constexpr int32_t kNB_INPUTS = 4;
    static constexpr char const* kINPUT_NAMES[4] = {"x_q", "conv_state_q", "weight_q", "bias"};
    static constexpr nvinfer1::DataType kINPUT_TYPES[4] = {nvinfer1::DataType::kINT8, nvinfer1::DataType::kINT8, nvinfer1::DataType::kINT8, nvinfer1::DataType::kFLOAT};
    static constexpr int32_t kINPUT_RANKS[4] = {3, 3, 2, 1};
    static constexpr int32_t kINPUT_DIMS[4][kMAX_RANK] = {{kSYM_B, kSYM_L, kSYM_D_IN, kNO_SYM}, {kSYM_B, kSYM_D_IN, kSYM_K, kNO_SYM}, {kSYM_D_IN, kSYM_K, kNO_SYM, kNO_SYM}, {kSYM_D_IN, kNO_SYM, kNO_SYM, kNO_SYM}};
    static constexpr int32_t kNB_OUTPUTS = 2;
    static constexpr char const* kOUTPUT_NAMES[2] = {"u_q", "conv_state_out"};
    static constexpr nvinfer1::DataType kOUTPUT_TYPES[2] = {nvinfer1::DataType::kINT8, nvinfer1::DataType::kINT8};
    static constexpr int32_t kOUTPUT_RANKS[2] = {3, 3};
    static constexpr int32_t kOUTPUT_DIMS[2][kMAX_RANK] = {{kSYM_B, kSYM_L, kSYM_D_IN, kNO_SYM}, {kSYM_B, kSYM_D_IN, kSYM_K, kNO_SYM}};
    //! Each output has the shape of this input (same shape symbols), or -1: no input has it.
    static constexpr int32_t kOUTPUT_SHAPE_SOURCE[2] = {0, 1};
    //! Output o's dim d is input kOUTPUT_DIM_SOURCES[o][d][0]'s dim kOUTPUT_DIM_SOURCES[o][d][1].
    static constexpr int32_t kOUTPUT_DIM_SOURCES[2][kMAX_RANK][2] = {{{0, 0}, {0, 1}, {0, 2}, {-1, -1}}, {{1, 0}, {1, 1}, {1, 2}, {-1, -1}}};
    static constexpr int32_t kNB_FIELDS = 3;
    static constexpr char const* kFIELD_NAMES[3] = {"x_scale", "weight_scale", "out_scale"};
    static constexpr nvinfer1::PluginFieldType kFIELD_TYPES[3] = {nvinfer1::PluginFieldType::kFLOAT32, nvinfer1::PluginFieldType::kFLOAT32, nvinfer1::PluginFieldType::kFLOAT32};
    struct In
    {
        static constexpr int32_t kX_Q = 0;
        static constexpr int32_t kCONV_STATE_Q = 1;
        static constexpr int32_t kWEIGHT_Q = 2;
        static constexpr int32_t kBIAS = 3;
    };
    struct Out
    {
        static constexpr int32_t kU_Q = 0;
        static constexpr int32_t kCONV_STATE_OUT = 1;
    };
    struct Field
    {
        static constexpr int32_t kX_SCALE = 0;
        static constexpr int32_t kWEIGHT_SCALE = 1;
        static constexpr int32_t kOUT_SCALE = 2;
    };
};

//! Selective scan on dequantized int8 u, dt, B, C with a float32 state: delta = softplus(dt + dt_bias), h_t = exp(delta A) h_{t-1} + delta B_t u_t, y = (C_t . h_t + D u) * silu(z).
struct Int8SelectiveScan
{
    static constexpr char const* kNAME = "Int8SelectiveScan";
    static constexpr char const* kVERSION = "1";
    static constexpr char const* kNAMESPACE = "";
    static constexpr int32_t kNB_INPUTS = 9;
    static constexpr char const* kINPUT_NAMES[9] = {"u_q", "dt_q", "B_q", "C_q", "z_q", "ssm_state", "A", "D", "dt_bias"};
    static constexpr nvinfer1::DataType kINPUT_TYPES[9] = {nvinfer1::DataType::kINT8, nvinfer1::DataType::kINT8, nvinfer1::DataType::kINT8, nvinfer1::DataType::kINT8, nvinfer1::DataType::kINT8, nvinfer1::DataType::kFLOAT, nvinfer1::DataType::kFLOAT, nvinfer1::DataType::kFLOAT, nvinfer1::DataType::kFLOAT};
    static constexpr int32_t kINPUT_RANKS[9] = {3, 3, 3, 3, 3, 3, 2, 1, 1};
    static constexpr int32_t kINPUT_DIMS[9][kMAX_RANK] = {{kSYM_B, kSYM_L, kSYM_D_IN, kNO_SYM}, {kSYM_B, kSYM_L, kSYM_D_IN, kNO_SYM}, {kSYM_B, kSYM_L, kSYM_N, kNO_SYM}, {kSYM_B, kSYM_L, kSYM_N, kNO_SYM}, {kSYM_B, kSYM_L, kSYM_D_IN, kNO_SYM}, {kSYM_B, kSYM_D_IN, kSYM_N, kNO_SYM}, {kSYM_D_IN, kSYM_N, kNO_SYM, kNO_SYM}, {kSYM_D_IN, kNO_SYM, kNO_SYM, kNO_SYM}, {kSYM_D_IN, kNO_SYM, kNO_SYM, kNO_SYM}};
    static constexpr int32_t kNB_OUTPUTS = 2;
    static constexpr char const* kOUTPUT_NAMES[2] = {"y", "ssm_state_out"};
    static constexpr nvinfer1::DataType kOUTPUT_TYPES[2] = {nvinfer1::DataType::kFLOAT, nvinfer1::DataType::kFLOAT};
    static constexpr int32_t kOUTPUT_RANKS[2] = {3, 3};
    static constexpr int32_t kOUTPUT_DIMS[2][kMAX_RANK] = {{kSYM_B, kSYM_L, kSYM_D_IN, kNO_SYM}, {kSYM_B, kSYM_D_IN, kSYM_N, kNO_SYM}};
    //! Each output has the shape of this input (same shape symbols), or -1: no input has it.
    static constexpr int32_t kOUTPUT_SHAPE_SOURCE[2] = {0, 5};
    //! Output o's dim d is input kOUTPUT_DIM_SOURCES[o][d][0]'s dim kOUTPUT_DIM_SOURCES[o][d][1].
    static constexpr int32_t kOUTPUT_DIM_SOURCES[2][kMAX_RANK][2] = {{{0, 0}, {0, 1}, {0, 2}, {-1, -1}}, {{5, 0}, {5, 1}, {5, 2}, {-1, -1}}};
    static constexpr int32_t kNB_FIELDS = 5;
    static constexpr char const* kFIELD_NAMES[5] = {"u_scale", "dt_scale", "B_scale", "C_scale", "z_scale"};
    static constexpr nvinfer1::PluginFieldType kFIELD_TYPES[5] = {nvinfer1::PluginFieldType::kFLOAT32, nvinfer1::PluginFieldType::kFLOAT32, nvinfer1::PluginFieldType::kFLOAT32, nvinfer1::PluginFieldType::kFLOAT32, nvinfer1::PluginFieldType::kFLOAT32};
    struct In
    {
        static constexpr int32_t kU_Q = 0;
        static constexpr int32_t kDT_Q = 1;
        static constexpr int32_t kB_Q = 2;
        static constexpr int32_t kC_Q = 3;
        static constexpr int32_t kZ_Q = 4;
        static constexpr int32_t kSSM_STATE = 5;
        static constexpr int32_t kA = 6;
        static constexpr int32_t kD = 7;
        static constexpr int32_t kDT_BIAS = 8;
    };
    struct Out
    {
        static constexpr int32_t kY = 0;
        static constexpr int32_t kSSM_STATE_OUT = 1;
    };
    struct Field
    {
        static constexpr int32_t kU_SCALE = 0;
        static constexpr int32_t kDT_SCALE = 1;
        static constexpr int32_t kB_SCALE = 2;
        static constexpr int32_t kC_SCALE = 3;
        static constexpr int32_t kZ_SCALE = 4;
    };
};

//! Orthonormal Hadamard transform over channels (edge_quamba.quant.hadamard), then int8 at out_scale.
struct HadamardQuantize
{
    static constexpr char const* kNAME = "HadamardQuantize";
    static constexpr char const* kVERSION = "1";
    static constexpr char const* kNAMESPACE = "";
    static constexpr int32_t kNB_INPUTS = 1;
    static constexpr char const* kINPUT_NAMES[1] = {"y"};
    static constexpr nvinfer1::DataType kINPUT_TYPES[1] = {nvinfer1::DataType::kFLOAT};
    static constexpr int32_t kINPUT_RANKS[1] = {3};
    static constexpr int32_t kINPUT_DIMS[1][kMAX_RANK] = {{kSYM_B, kSYM_L, kSYM_D_IN, kNO_SYM}};
    static constexpr int32_t kNB_OUTPUTS = 1;
    static constexpr char const* kOUTPUT_NAMES[1] = {"y_q"};
    static constexpr nvinfer1::DataType kOUTPUT_TYPES[1] = {nvinfer1::DataType::kINT8};
    static constexpr int32_t kOUTPUT_RANKS[1] = {3};
    static constexpr int32_t kOUTPUT_DIMS[1][kMAX_RANK] = {{kSYM_B, kSYM_L, kSYM_D_IN, kNO_SYM}};
    //! Each output has the shape of this input (same shape symbols), or -1: no input has it.
    static constexpr int32_t kOUTPUT_SHAPE_SOURCE[1] = {0};
    //! Output o's dim d is input kOUTPUT_DIM_SOURCES[o][d][0]'s dim kOUTPUT_DIM_SOURCES[o][d][1].
    static constexpr int32_t kOUTPUT_DIM_SOURCES[1][kMAX_RANK][2] = {{{0, 0}, {0, 1}, {0, 2}, {-1, -1}}};
    static constexpr int32_t kNB_FIELDS = 1;
    static constexpr char const* kFIELD_NAMES[1] = {"out_scale"};
    static constexpr nvinfer1::PluginFieldType kFIELD_TYPES[1] = {nvinfer1::PluginFieldType::kFLOAT32};
    struct In
    {
        static constexpr int32_t kY = 0;
    };
    struct Out
    {
        static constexpr int32_t kY_Q = 0;
    };
    struct Field
    {
        static constexpr int32_t kOUT_SCALE = 0;
    };
};

//! W4A8 linear, float out (out_proj): per group of group_size columns the exact int32 sum of x_q times the int4 codes, times float32(x_scale * weight_scale[n, g]), groups added in float32 in ascending order, + bias.
struct W4A8Linear
{
    static constexpr char const* kNAME = "W4A8Linear";
    static constexpr char const* kVERSION = "1";
    static constexpr char const* kNAMESPACE = "";
    static constexpr int32_t kNB_INPUTS = 4;
    static constexpr char const* kINPUT_NAMES[4] = {"x_q", "weight_packed", "weight_scale", "bias"};
    static constexpr nvinfer1::DataType kINPUT_TYPES[4] = {nvinfer1::DataType::kINT8, nvinfer1::DataType::kINT8, nvinfer1::DataType::kFLOAT, nvinfer1::DataType::kFLOAT};
    static constexpr int32_t kINPUT_RANKS[4] = {3, 2, 2, 1};
    static constexpr int32_t kINPUT_DIMS[4][kMAX_RANK] = {{kSYM_B, kSYM_L, kSYM_IN_FEATURES, kNO_SYM}, {kSYM_OUT_FEATURES, kSYM_PACKED, kNO_SYM, kNO_SYM}, {kSYM_OUT_FEATURES, kSYM_GROUPS, kNO_SYM, kNO_SYM}, {kSYM_OUT_FEATURES, kNO_SYM, kNO_SYM, kNO_SYM}};
    static constexpr int32_t kNB_OUTPUTS = 1;
    static constexpr char const* kOUTPUT_NAMES[1] = {"y"};
    static constexpr nvinfer1::DataType kOUTPUT_TYPES[1] = {nvinfer1::DataType::kFLOAT};
    static constexpr int32_t kOUTPUT_RANKS[1] = {3};
    static constexpr int32_t kOUTPUT_DIMS[1][kMAX_RANK] = {{kSYM_B, kSYM_L, kSYM_OUT_FEATURES, kNO_SYM}};
    //! Each output has the shape of this input (same shape symbols), or -1: no input has it.
    static constexpr int32_t kOUTPUT_SHAPE_SOURCE[1] = {-1};
    //! Output o's dim d is input kOUTPUT_DIM_SOURCES[o][d][0]'s dim kOUTPUT_DIM_SOURCES[o][d][1].
    static constexpr int32_t kOUTPUT_DIM_SOURCES[1][kMAX_RANK][2] = {{{0, 0}, {0, 1}, {1, 0}, {-1, -1}}};
    static constexpr int32_t kNB_FIELDS = 2;
    static constexpr char const* kFIELD_NAMES[2] = {"x_scale", "group_size"};
    static constexpr nvinfer1::PluginFieldType kFIELD_TYPES[2] = {nvinfer1::PluginFieldType::kFLOAT32, nvinfer1::PluginFieldType::kINT32};
    struct In
    {
        static constexpr int32_t kX_Q = 0;
        static constexpr int32_t kWEIGHT_PACKED = 1;
        static constexpr int32_t kWEIGHT_SCALE = 2;
        static constexpr int32_t kBIAS = 3;
    };
    struct Out
    {
        static constexpr int32_t kY = 0;
    };
    struct Field
    {
        static constexpr int32_t kX_SCALE = 0;
        static constexpr int32_t kGROUP_SIZE = 1;
    };
};

//! W4A8Linear requantized to int8 at out_scale in the same op (the GEMM epilogue of in_proj, x_proj, dt_proj).
struct W4A8LinearQuantize
{
    static constexpr char const* kNAME = "W4A8LinearQuantize";
    static constexpr char const* kVERSION = "1";
    static constexpr char const* kNAMESPACE = "";
    static constexpr int32_t kNB_INPUTS = 4;
    static constexpr char const* kINPUT_NAMES[4] = {"x_q", "weight_packed", "weight_scale", "bias"};
    static constexpr nvinfer1::DataType kINPUT_TYPES[4] = {nvinfer1::DataType::kINT8, nvinfer1::DataType::kINT8, nvinfer1::DataType::kFLOAT, nvinfer1::DataType::kFLOAT};
    static constexpr int32_t kINPUT_RANKS[4] = {3, 2, 2, 1};
    static constexpr int32_t kINPUT_DIMS[4][kMAX_RANK] = {{kSYM_B, kSYM_L, kSYM_IN_FEATURES, kNO_SYM}, {kSYM_OUT_FEATURES, kSYM_PACKED, kNO_SYM, kNO_SYM}, {kSYM_OUT_FEATURES, kSYM_GROUPS, kNO_SYM, kNO_SYM}, {kSYM_OUT_FEATURES, kNO_SYM, kNO_SYM, kNO_SYM}};
    static constexpr int32_t kNB_OUTPUTS = 1;
    static constexpr char const* kOUTPUT_NAMES[1] = {"y_q"};
    static constexpr nvinfer1::DataType kOUTPUT_TYPES[1] = {nvinfer1::DataType::kINT8};
    static constexpr int32_t kOUTPUT_RANKS[1] = {3};
    static constexpr int32_t kOUTPUT_DIMS[1][kMAX_RANK] = {{kSYM_B, kSYM_L, kSYM_OUT_FEATURES, kNO_SYM}};
    //! Each output has the shape of this input (same shape symbols), or -1: no input has it.
    static constexpr int32_t kOUTPUT_SHAPE_SOURCE[1] = {-1};
    //! Output o's dim d is input kOUTPUT_DIM_SOURCES[o][d][0]'s dim kOUTPUT_DIM_SOURCES[o][d][1].
    static constexpr int32_t kOUTPUT_DIM_SOURCES[1][kMAX_RANK][2] = {{{0, 0}, {0, 1}, {1, 0}, {-1, -1}}};
    static constexpr int32_t kNB_FIELDS = 3;
    static constexpr char const* kFIELD_NAMES[3] = {"x_scale", "group_size", "out_scale"};
    static constexpr nvinfer1::PluginFieldType kFIELD_TYPES[3] = {nvinfer1::PluginFieldType::kFLOAT32, nvinfer1::PluginFieldType::kINT32, nvinfer1::PluginFieldType::kFLOAT32};
    struct In
    {
        static constexpr int32_t kX_Q = 0;
        static constexpr int32_t kWEIGHT_PACKED = 1;
        static constexpr int32_t kWEIGHT_SCALE = 2;
        static constexpr int32_t kBIAS = 3;
    };
    struct Out
    {
        static constexpr int32_t kY_Q = 0;
    };
    struct Field
    {
        static constexpr int32_t kX_SCALE = 0;
        static constexpr int32_t kGROUP_SIZE = 1;
        static constexpr int32_t kOUT_SCALE = 2;
    };
};

//! W4A16 linear: float16 x times the int4 weight dequantized in float32 (code * weight_scale[n, g]), accumulated in float32, + bias, rounded once to float16.
struct W4A16Linear
{
    static constexpr char const* kNAME = "W4A16Linear";
    static constexpr char const* kVERSION = "1";
    static constexpr char const* kNAMESPACE = "";
    static constexpr int32_t kNB_INPUTS = 4;
    static constexpr char const* kINPUT_NAMES[4] = {"x", "weight_packed", "weight_scale", "bias"};
    static constexpr nvinfer1::DataType kINPUT_TYPES[4] = {nvinfer1::DataType::kHALF, nvinfer1::DataType::kINT8, nvinfer1::DataType::kFLOAT, nvinfer1::DataType::kFLOAT};
    static constexpr int32_t kINPUT_RANKS[4] = {3, 2, 2, 1};
    static constexpr int32_t kINPUT_DIMS[4][kMAX_RANK] = {{kSYM_B, kSYM_L, kSYM_IN_FEATURES, kNO_SYM}, {kSYM_OUT_FEATURES, kSYM_PACKED, kNO_SYM, kNO_SYM}, {kSYM_OUT_FEATURES, kSYM_GROUPS, kNO_SYM, kNO_SYM}, {kSYM_OUT_FEATURES, kNO_SYM, kNO_SYM, kNO_SYM}};
    static constexpr int32_t kNB_OUTPUTS = 1;
    static constexpr char const* kOUTPUT_NAMES[1] = {"y"};
    static constexpr nvinfer1::DataType kOUTPUT_TYPES[1] = {nvinfer1::DataType::kHALF};
    static constexpr int32_t kOUTPUT_RANKS[1] = {3};
    static constexpr int32_t kOUTPUT_DIMS[1][kMAX_RANK] = {{kSYM_B, kSYM_L, kSYM_OUT_FEATURES, kNO_SYM}};
    //! Each output has the shape of this input (same shape symbols), or -1: no input has it.
    static constexpr int32_t kOUTPUT_SHAPE_SOURCE[1] = {-1};
    //! Output o's dim d is input kOUTPUT_DIM_SOURCES[o][d][0]'s dim kOUTPUT_DIM_SOURCES[o][d][1].
    static constexpr int32_t kOUTPUT_DIM_SOURCES[1][kMAX_RANK][2] = {{{0, 0}, {0, 1}, {1, 0}, {-1, -1}}};
    static constexpr int32_t kNB_FIELDS = 1;
    static constexpr char const* kFIELD_NAMES[1] = {"group_size"};
    static constexpr nvinfer1::PluginFieldType kFIELD_TYPES[1] = {nvinfer1::PluginFieldType::kINT32};
    struct In
    {
        static constexpr int32_t kX = 0;
        static constexpr int32_t kWEIGHT_PACKED = 1;
        static constexpr int32_t kWEIGHT_SCALE = 2;
        static constexpr int32_t kBIAS = 3;
    };
    struct Out
    {
        static constexpr int32_t kY = 0;
    };
    struct Field
    {
        static constexpr int32_t kGROUP_SIZE = 0;
    };
};

//! W4A16's scan (the fp reference's, float16 model): float16 u, B, C, D and float32 delta (softplus applied), A and state; per t h = exp(delta A) h + (delta u) B, y = C . h, then y + u D; float32 out, no gate.
struct SelectiveScanF16
{
    static constexpr char const* kNAME = "SelectiveScanF16";
    static constexpr char const* kVERSION = "1";
    static constexpr char const* kNAMESPACE = "";
    static constexpr int32_t kNB_INPUTS = 7;
    static constexpr char const* kINPUT_NAMES[7] = {"u", "delta", "A", "B", "C", "D", "ssm_state"};
    static constexpr nvinfer1::DataType kINPUT_TYPES[7] = {nvinfer1::DataType::kHALF, nvinfer1::DataType::kFLOAT, nvinfer1::DataType::kFLOAT, nvinfer1::DataType::kHALF, nvinfer1::DataType::kHALF, nvinfer1::DataType::kHALF, nvinfer1::DataType::kFLOAT};
    static constexpr int32_t kINPUT_RANKS[7] = {3, 3, 2, 3, 3, 1, 3};
    static constexpr int32_t kINPUT_DIMS[7][kMAX_RANK] = {{kSYM_B, kSYM_L, kSYM_D_IN, kNO_SYM}, {kSYM_B, kSYM_L, kSYM_D_IN, kNO_SYM}, {kSYM_D_IN, kSYM_N, kNO_SYM, kNO_SYM}, {kSYM_B, kSYM_L, kSYM_N, kNO_SYM}, {kSYM_B, kSYM_L, kSYM_N, kNO_SYM}, {kSYM_D_IN, kNO_SYM, kNO_SYM, kNO_SYM}, {kSYM_B, kSYM_D_IN, kSYM_N, kNO_SYM}};
    static constexpr int32_t kNB_OUTPUTS = 2;
    static constexpr char const* kOUTPUT_NAMES[2] = {"y", "ssm_state_out"};
    static constexpr nvinfer1::DataType kOUTPUT_TYPES[2] = {nvinfer1::DataType::kFLOAT, nvinfer1::DataType::kFLOAT};
    static constexpr int32_t kOUTPUT_RANKS[2] = {3, 3};
    static constexpr int32_t kOUTPUT_DIMS[2][kMAX_RANK] = {{kSYM_B, kSYM_L, kSYM_D_IN, kNO_SYM}, {kSYM_B, kSYM_D_IN, kSYM_N, kNO_SYM}};
    //! Each output has the shape of this input (same shape symbols), or -1: no input has it.
    static constexpr int32_t kOUTPUT_SHAPE_SOURCE[2] = {0, 6};
    //! Output o's dim d is input kOUTPUT_DIM_SOURCES[o][d][0]'s dim kOUTPUT_DIM_SOURCES[o][d][1].
    static constexpr int32_t kOUTPUT_DIM_SOURCES[2][kMAX_RANK][2] = {{{0, 0}, {0, 1}, {0, 2}, {-1, -1}}, {{6, 0}, {6, 1}, {6, 2}, {-1, -1}}};
    static constexpr int32_t kNB_FIELDS = 0;
    static constexpr char const* kFIELD_NAMES[1] = {nullptr};
    static constexpr nvinfer1::PluginFieldType kFIELD_TYPES[1] = {nvinfer1::PluginFieldType::kUNKNOWN};
    struct In
    {
        static constexpr int32_t kU = 0;
        static constexpr int32_t kDELTA = 1;
        static constexpr int32_t kA = 2;
        static constexpr int32_t kB = 3;
        static constexpr int32_t kC = 4;
        static constexpr int32_t kD = 5;
        static constexpr int32_t kSSM_STATE = 6;
    };
    struct Out
    {
        static constexpr int32_t kY = 0;
        static constexpr int32_t kSSM_STATE_OUT = 1;
    };
    struct Field
    {
    };
};

//! Mamba2's conv over x | B | C: Int8CausalConv1d whose output channel c is quantized at out_scales[c] (x at its sort-and-cluster group's scale, B and C at their state group's).
struct Int8CausalConv1dChannelScales
{
    static constexpr char const* kNAME = "Int8CausalConv1dChannelScales";
    static constexpr char const* kVERSION = "1";
    static constexpr char const* kNAMESPACE = "";
    static constexpr int32_t kNB_INPUTS = 5;
    static constexpr char const* kINPUT_NAMES[5] = {"x_q", "conv_state_q", "weight_q", "bias", "out_scales"};
    static constexpr nvinfer1::DataType kINPUT_TYPES[5] = {nvinfer1::DataType::kINT8, nvinfer1::DataType::kINT8, nvinfer1::DataType::kINT8, nvinfer1::DataType::kFLOAT, nvinfer1::DataType::kFLOAT};
    static constexpr int32_t kINPUT_RANKS[5] = {3, 3, 2, 1, 1};
    static constexpr int32_t kINPUT_DIMS[5][kMAX_RANK] = {{kSYM_B, kSYM_L, kSYM_CONV_DIM, kNO_SYM}, {kSYM_B, kSYM_CONV_DIM, kSYM_K, kNO_SYM}, {kSYM_CONV_DIM, kSYM_K, kNO_SYM, kNO_SYM}, {kSYM_CONV_DIM, kNO_SYM, kNO_SYM, kNO_SYM}, {kSYM_CONV_DIM, kNO_SYM, kNO_SYM, kNO_SYM}};
    static constexpr int32_t kNB_OUTPUTS = 2;
    static constexpr char const* kOUTPUT_NAMES[2] = {"out_q", "conv_state_out"};
    static constexpr nvinfer1::DataType kOUTPUT_TYPES[2] = {nvinfer1::DataType::kINT8, nvinfer1::DataType::kINT8};
    static constexpr int32_t kOUTPUT_RANKS[2] = {3, 3};
    static constexpr int32_t kOUTPUT_DIMS[2][kMAX_RANK] = {{kSYM_B, kSYM_L, kSYM_CONV_DIM, kNO_SYM}, {kSYM_B, kSYM_CONV_DIM, kSYM_K, kNO_SYM}};
    //! Each output has the shape of this input (same shape symbols), or -1: no input has it.
    static constexpr int32_t kOUTPUT_SHAPE_SOURCE[2] = {0, 1};
    //! Output o's dim d is input kOUTPUT_DIM_SOURCES[o][d][0]'s dim kOUTPUT_DIM_SOURCES[o][d][1].
    static constexpr int32_t kOUTPUT_DIM_SOURCES[2][kMAX_RANK][2] = {{{0, 0}, {0, 1}, {0, 2}, {-1, -1}}, {{1, 0}, {1, 1}, {1, 2}, {-1, -1}}};
    static constexpr int32_t kNB_FIELDS = 2;
    static constexpr char const* kFIELD_NAMES[2] = {"x_scale", "weight_scale"};
    static constexpr nvinfer1::PluginFieldType kFIELD_TYPES[2] = {nvinfer1::PluginFieldType::kFLOAT32, nvinfer1::PluginFieldType::kFLOAT32};
    struct In
    {
        static constexpr int32_t kX_Q = 0;
        static constexpr int32_t kCONV_STATE_Q = 1;
        static constexpr int32_t kWEIGHT_Q = 2;
        static constexpr int32_t kBIAS = 3;
        static constexpr int32_t kOUT_SCALES = 4;
    };
    struct Out
    {
        static constexpr int32_t kOUT_Q = 0;
        static constexpr int32_t kCONV_STATE_OUT = 1;
    };
    struct Field
    {
        static constexpr int32_t kX_SCALE = 0;
        static constexpr int32_t kWEIGHT_SCALE = 1;
    };
};

//! The Mamba2 SSD recurrence on dequantized int8 x (per channel), dt, B and C (per state group) with a float32 state: delta = softplus(dt + dt_bias), h_t = exp(delta A) h_{t-1} + delta x_t B_t^T, y = h_t C_t + D x_t.
struct Int8SSDScan
{
    static constexpr char const* kNAME = "Int8SSDScan";
    static constexpr char const* kVERSION = "1";
    static constexpr char const* kNAMESPACE = "";
    static constexpr int32_t kNB_INPUTS = 11;
    static constexpr char const* kINPUT_NAMES[11] = {"x_q", "dt_q", "B_q", "C_q", "ssm_state", "A", "D", "dt_bias", "x_scales", "B_scales", "C_scales"};
    static constexpr nvinfer1::DataType kINPUT_TYPES[11] = {nvinfer1::DataType::kINT8, nvinfer1::DataType::kINT8, nvinfer1::DataType::kINT8, nvinfer1::DataType::kINT8, nvinfer1::DataType::kFLOAT, nvinfer1::DataType::kFLOAT, nvinfer1::DataType::kFLOAT, nvinfer1::DataType::kFLOAT, nvinfer1::DataType::kFLOAT, nvinfer1::DataType::kFLOAT, nvinfer1::DataType::kFLOAT};
    static constexpr int32_t kINPUT_RANKS[11] = {3, 3, 3, 3, 4, 1, 1, 1, 1, 1, 1};
    static constexpr int32_t kINPUT_DIMS[11][kMAX_RANK] = {{kSYM_B, kSYM_L, kSYM_D_IN, kNO_SYM}, {kSYM_B, kSYM_L, kSYM_H, kNO_SYM}, {kSYM_B, kSYM_L, kSYM_GN, kNO_SYM}, {kSYM_B, kSYM_L, kSYM_GN, kNO_SYM}, {kSYM_B, kSYM_H, kSYM_P, kSYM_N}, {kSYM_H, kNO_SYM, kNO_SYM, kNO_SYM}, {kSYM_H, kNO_SYM, kNO_SYM, kNO_SYM}, {kSYM_H, kNO_SYM, kNO_SYM, kNO_SYM}, {kSYM_D_IN, kNO_SYM, kNO_SYM, kNO_SYM}, {kSYM_GN, kNO_SYM, kNO_SYM, kNO_SYM}, {kSYM_GN, kNO_SYM, kNO_SYM, kNO_SYM}};
    static constexpr int32_t kNB_OUTPUTS = 2;
    static constexpr char const* kOUTPUT_NAMES[2] = {"y", "ssm_state_out"};
    static constexpr nvinfer1::DataType kOUTPUT_TYPES[2] = {nvinfer1::DataType::kFLOAT, nvinfer1::DataType::kFLOAT};
    static constexpr int32_t kOUTPUT_RANKS[2] = {3, 4};
    static constexpr int32_t kOUTPUT_DIMS[2][kMAX_RANK] = {{kSYM_B, kSYM_L, kSYM_D_IN, kNO_SYM}, {kSYM_B, kSYM_H, kSYM_P, kSYM_N}};
    //! Each output has the shape of this input (same shape symbols), or -1: no input has it.
    static constexpr int32_t kOUTPUT_SHAPE_SOURCE[2] = {0, 4};
    //! Output o's dim d is input kOUTPUT_DIM_SOURCES[o][d][0]'s dim kOUTPUT_DIM_SOURCES[o][d][1].
    static constexpr int32_t kOUTPUT_DIM_SOURCES[2][kMAX_RANK][2] = {{{0, 0}, {0, 1}, {0, 2}, {-1, -1}}, {{4, 0}, {4, 1}, {4, 2}, {4, 3}}};
    static constexpr int32_t kNB_FIELDS = 1;
    static constexpr char const* kFIELD_NAMES[1] = {"dt_scale"};
    static constexpr nvinfer1::PluginFieldType kFIELD_TYPES[1] = {nvinfer1::PluginFieldType::kFLOAT32};
    struct In
    {
        static constexpr int32_t kX_Q = 0;
        static constexpr int32_t kDT_Q = 1;
        static constexpr int32_t kB_Q = 2;
        static constexpr int32_t kC_Q = 3;
        static constexpr int32_t kSSM_STATE = 4;
        static constexpr int32_t kA = 5;
        static constexpr int32_t kD = 6;
        static constexpr int32_t kDT_BIAS = 7;
        static constexpr int32_t kX_SCALES = 8;
        static constexpr int32_t kB_SCALES = 9;
        static constexpr int32_t kC_SCALES = 10;
    };
    struct Out
    {
        static constexpr int32_t kY = 0;
        static constexpr int32_t kSSM_STATE_OUT = 1;
    };
    struct Field
    {
        static constexpr int32_t kDT_SCALE = 0;
    };
};

//! Mamba2's gated RMSNorm: g = y * silu(z_q * z_scale), per group of group_size channels g / sqrt(mean(g^2) + eps), times weight; int8 at out_scale.
struct GatedRMSNormQuantize
{
    static constexpr char const* kNAME = "GatedRMSNormQuantize";
    static constexpr char const* kVERSION = "1";
    static constexpr char const* kNAMESPACE = "";
    static constexpr int32_t kNB_INPUTS = 3;
    static constexpr char const* kINPUT_NAMES[3] = {"y", "z_q", "weight"};
    static constexpr nvinfer1::DataType kINPUT_TYPES[3] = {nvinfer1::DataType::kFLOAT, nvinfer1::DataType::kINT8, nvinfer1::DataType::kFLOAT};
    static constexpr int32_t kINPUT_RANKS[3] = {3, 3, 1};
    static constexpr int32_t kINPUT_DIMS[3][kMAX_RANK] = {{kSYM_B, kSYM_L, kSYM_D_IN, kNO_SYM}, {kSYM_B, kSYM_L, kSYM_D_IN, kNO_SYM}, {kSYM_D_IN, kNO_SYM, kNO_SYM, kNO_SYM}};
    static constexpr int32_t kNB_OUTPUTS = 1;
    static constexpr char const* kOUTPUT_NAMES[1] = {"y_q"};
    static constexpr nvinfer1::DataType kOUTPUT_TYPES[1] = {nvinfer1::DataType::kINT8};
    static constexpr int32_t kOUTPUT_RANKS[1] = {3};
    static constexpr int32_t kOUTPUT_DIMS[1][kMAX_RANK] = {{kSYM_B, kSYM_L, kSYM_D_IN, kNO_SYM}};
    //! Each output has the shape of this input (same shape symbols), or -1: no input has it.
    static constexpr int32_t kOUTPUT_SHAPE_SOURCE[1] = {0};
    //! Output o's dim d is input kOUTPUT_DIM_SOURCES[o][d][0]'s dim kOUTPUT_DIM_SOURCES[o][d][1].
    static constexpr int32_t kOUTPUT_DIM_SOURCES[1][kMAX_RANK][2] = {{{0, 0}, {0, 1}, {0, 2}, {-1, -1}}};
    static constexpr int32_t kNB_FIELDS = 4;
    static constexpr char const* kFIELD_NAMES[4] = {"z_scale", "eps", "group_size", "out_scale"};
    static constexpr nvinfer1::PluginFieldType kFIELD_TYPES[4] = {nvinfer1::PluginFieldType::kFLOAT32, nvinfer1::PluginFieldType::kFLOAT32, nvinfer1::PluginFieldType::kINT32, nvinfer1::PluginFieldType::kFLOAT32};
    struct In
    {
        static constexpr int32_t kY = 0;
        static constexpr int32_t kZ_Q = 1;
        static constexpr int32_t kWEIGHT = 2;
    };
    struct Out
    {
        static constexpr int32_t kY_Q = 0;
    };
    struct Field
    {
        static constexpr int32_t kZ_SCALE = 0;
        static constexpr int32_t kEPS = 1;
        static constexpr int32_t kGROUP_SIZE = 2;
        static constexpr int32_t kOUT_SCALE = 3;
    };
};

//! Mamba2's gated RMSNorm: g = y * silu(z_q * z_scale), per group of group_size channels g / sqrt(mean(g^2) + eps), times weight; the Hadamard transform over channels (as HadamardQuantize), then int8 at out_scale.
struct GatedRMSNormHadamardQuantize
{
    static constexpr char const* kNAME = "GatedRMSNormHadamardQuantize";
    static constexpr char const* kVERSION = "1";
    static constexpr char const* kNAMESPACE = "";
    static constexpr int32_t kNB_INPUTS = 3;
    static constexpr char const* kINPUT_NAMES[3] = {"y", "z_q", "weight"};
    static constexpr nvinfer1::DataType kINPUT_TYPES[3] = {nvinfer1::DataType::kFLOAT, nvinfer1::DataType::kINT8, nvinfer1::DataType::kFLOAT};
    static constexpr int32_t kINPUT_RANKS[3] = {3, 3, 1};
    static constexpr int32_t kINPUT_DIMS[3][kMAX_RANK] = {{kSYM_B, kSYM_L, kSYM_D_IN, kNO_SYM}, {kSYM_B, kSYM_L, kSYM_D_IN, kNO_SYM}, {kSYM_D_IN, kNO_SYM, kNO_SYM, kNO_SYM}};
    static constexpr int32_t kNB_OUTPUTS = 1;
    static constexpr char const* kOUTPUT_NAMES[1] = {"y_q"};
    static constexpr nvinfer1::DataType kOUTPUT_TYPES[1] = {nvinfer1::DataType::kINT8};
    static constexpr int32_t kOUTPUT_RANKS[1] = {3};
    static constexpr int32_t kOUTPUT_DIMS[1][kMAX_RANK] = {{kSYM_B, kSYM_L, kSYM_D_IN, kNO_SYM}};
    //! Each output has the shape of this input (same shape symbols), or -1: no input has it.
    static constexpr int32_t kOUTPUT_SHAPE_SOURCE[1] = {0};
    //! Output o's dim d is input kOUTPUT_DIM_SOURCES[o][d][0]'s dim kOUTPUT_DIM_SOURCES[o][d][1].
    static constexpr int32_t kOUTPUT_DIM_SOURCES[1][kMAX_RANK][2] = {{{0, 0}, {0, 1}, {0, 2}, {-1, -1}}};
    static constexpr int32_t kNB_FIELDS = 4;
    static constexpr char const* kFIELD_NAMES[4] = {"z_scale", "eps", "group_size", "out_scale"};
    static constexpr nvinfer1::PluginFieldType kFIELD_TYPES[4] = {nvinfer1::PluginFieldType::kFLOAT32, nvinfer1::PluginFieldType::kFLOAT32, nvinfer1::PluginFieldType::kINT32, nvinfer1::PluginFieldType::kFLOAT32};
    struct In
    {
        static constexpr int32_t kY = 0;
        static constexpr int32_t kZ_Q = 1;
        static constexpr int32_t kWEIGHT = 2;
    };
    struct Out
    {
        static constexpr int32_t kY_Q = 0;
    };
    struct Field
    {
        static constexpr int32_t kZ_SCALE = 0;
        static constexpr int32_t kEPS = 1;
        static constexpr int32_t kGROUP_SIZE = 2;
        static constexpr int32_t kOUT_SCALE = 3;
    };
};

} // namespace spec
} // namespace trt
} // namespace edge_quamba
