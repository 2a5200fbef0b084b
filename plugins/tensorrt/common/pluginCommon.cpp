#include "pluginCommon.h"

#include <atomic>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>

namespace edge_quamba
{
namespace trt
{
namespace
{
// Set once by TensorRT when it loads the library (setLoggerFinder below); read on every error.
std::atomic<nvinfer1::ILoggerFinder*> gLoggerFinder{nullptr};
} // namespace

void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept
{
    nvinfer1::ILoggerFinder* expected = nullptr;
    gLoggerFinder.compare_exchange_strong(expected, finder); // the first finder wins, as TensorRT expects
}

void logError(char const* plugin, char const* message) noexcept
{
    char line[1024];
    std::snprintf(line, sizeof(line), "%s: %s", plugin, message);
    nvinfer1::ILoggerFinder* finder = gLoggerFinder.load();
    nvinfer1::ILogger* logger = finder != nullptr ? finder->findLogger() : nullptr;
    if (logger != nullptr)
    {
        logger->log(nvinfer1::ILogger::Severity::kERROR, line);
    }
    else
    {
        std::fprintf(stderr, "[edge-quamba plugin] %s\n", line);
    }
}

void logError(char const* plugin, std::string const& message) noexcept
{
    logError(plugin, message.c_str());
}

bool readFields(char const* plugin, char const* const* names, nvinfer1::PluginFieldType const* types, int32_t nbNames,
    nvinfer1::PluginFieldCollection const* fc, float* floats, int32_t* ints) noexcept
{
    try
    {
        if (fc == nullptr || (fc->nbFields > 0 && fc->fields == nullptr) || fc->nbFields < 0)
        {
            logError(plugin, "no plugin field collection (expected the op's fields)");
            return false;
        }
        bool seen[64] = {};
        if (nbNames > 64)
        {
            logError(plugin, "too many fields declared");
            return false;
        }
        for (int32_t i = 0; i < fc->nbFields; ++i)
        {
            nvinfer1::PluginField const& field = fc->fields[i];
            if (field.name == nullptr)
            {
                logError(plugin, "a plugin field has no name");
                return false;
            }
            int32_t index = -1;
            for (int32_t j = 0; j < nbNames; ++j)
            {
                if (std::strcmp(field.name, names[j]) == 0)
                {
                    index = j;
                }
            }
            std::string const name = field.name;
            if (index < 0)
            {
                std::string expected;
                for (int32_t j = 0; j < nbNames; ++j)
                {
                    expected += (j ? ", " : "") + std::string(names[j]);
                }
                logError(plugin, "unknown field '" + name + "' (fields: " + expected + ")");
                return false;
            }
            if (seen[index])
            {
                logError(plugin, "field '" + name + "' given twice");
                return false;
            }
            bool const isInt = types[index] == nvinfer1::PluginFieldType::kINT32;
            if (field.type != types[index] || field.length != 1 || field.data == nullptr)
            {
                logError(plugin, "field '" + name + "' must be one " + (isInt ? "kINT32" : "kFLOAT32") + " value (type "
                        + std::to_string(static_cast<int32_t>(field.type)) + ", length "
                        + std::to_string(field.length) + (field.data == nullptr ? ", no data)" : ")"));
                return false;
            }
            if (isInt)
            {
                int32_t value;
                std::memcpy(&value, field.data, sizeof(int32_t)); // the data pointer need not be aligned
                if (value < 1)
                {
                    logError(plugin, "field '" + name + "' = " + std::to_string(value) + " must be >= 1");
                    return false;
                }
                ints[index] = value;
            }
            else
            {
                float value;
                std::memcpy(&value, field.data, sizeof(float));
                if (!std::isfinite(value) || !(value > 0.0F))
                {
                    logError(plugin, "field '" + name + "' = " + std::to_string(value)
                            + " is not a scale (must be finite and > 0)");
                    return false;
                }
                floats[index] = value;
            }
            seen[index] = true;
        }
        for (int32_t j = 0; j < nbNames; ++j)
        {
            if (!seen[j])
            {
                logError(plugin, "missing field '" + std::string(names[j]) + "'");
                return false;
            }
        }
        return true;
    }
    catch (std::exception const& e)
    {
        logError(plugin, e.what());
        return false;
    }
}

bool checkSymbols(char const* plugin, char const* what, int32_t nb, char const* const* names, int32_t const* ranks,
    int32_t const (*symDims)[spec::kMAX_RANK], nvinfer1::Dims const* const* dims, SymbolValues& sym) noexcept
{
    try
    {
        for (int32_t i = 0; i < nb; ++i)
        {
            if (dims[i]->nbDims != ranks[i])
            {
                logError(plugin, std::string(what) + " '" + names[i] + "' has rank " + std::to_string(dims[i]->nbDims)
                        + ", expected " + std::to_string(ranks[i]));
                return false;
            }
            for (int32_t d = 0; d < ranks[i]; ++d)
            {
                int64_t const value = dims[i]->d[d];
                int32_t const s = symDims[i][d];
                if (value < 0)
                {
                    continue; // unknown until runtime
                }
                if (value > INT32_MAX)
                {
                    logError(plugin, std::string(what) + " '" + names[i] + "': " + spec::kSYMBOL_NAMES[s] + " = "
                            + std::to_string(value) + " exceeds int32 (the kernels' size type)");
                    return false;
                }
                if (value == 0)
                {
                    logError(plugin, std::string(what) + " '" + names[i] + "' has an empty dimension "
                            + spec::kSYMBOL_NAMES[s]);
                    return false;
                }
                if (sym.v[s] == kUNKNOWN_DIM)
                {
                    sym.v[s] = value;
                }
                else if (sym.v[s] != value)
                {
                    logError(plugin, std::string(what) + " '" + names[i] + "': " + spec::kSYMBOL_NAMES[s] + " = "
                            + std::to_string(value) + " disagrees with " + std::to_string(sym.v[s])
                            + " of another tensor");
                    return false;
                }
            }
        }
        return true;
    }
    catch (std::exception const& e)
    {
        logError(plugin, e.what());
        return false;
    }
}

int32_t reportLaunch(char const* plugin, cudaError_t status) noexcept
{
    if (status == cudaSuccess)
    {
        return 0;
    }
    char message[256];
    std::snprintf(message, sizeof(message), "kernel launch failed: %s (%s)", cudaGetErrorName(status),
        cudaGetErrorString(status));
    logError(plugin, message);
    return 1;
}

int64_t leadingVolume(nvinfer1::Dims const& dims, int32_t end) noexcept
{
    int64_t volume = 1;
    for (int32_t d = 0; d < end; ++d)
    {
        volume *= dims.d[d];
    }
    return volume;
}

} // namespace trt
} // namespace edge_quamba
