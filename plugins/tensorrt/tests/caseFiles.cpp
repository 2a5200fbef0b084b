// TEST ONLY: reading make_cases.py's case folders (caseFiles.h).
#include "caseFiles.h"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace edge_quamba
{
namespace trt
{
namespace test
{
namespace
{
using namespace nvinfer1;

Tensor readTensorLine(std::istringstream& line, std::string const& where)
{
    Tensor t;
    std::string type;
    int32_t rank = 0;
    line >> t.name >> type >> rank;
    if ((type != "int8" && type != "float32") || rank < 0 || rank > Dims::MAX_DIMS)
    {
        fatal(where + ": bad tensor line (dtype " + type + ", rank " + std::to_string(rank) + ")");
    }
    t.type = type == "int8" ? DataType::kINT8 : DataType::kFLOAT;
    std::vector<int64_t> d(rank);
    for (auto& v : d)
    {
        line >> v;
    }
    t.dims = makeDims(d);
    line >> t.file;
    if (!line || t.file.empty())
    {
        fatal(where + ": truncated tensor line");
    }
    return t;
}

std::vector<std::string> lines(std::string const& path)
{
    std::ifstream in(path);
    if (!in)
    {
        fatal("cannot read " + path);
    }
    std::vector<std::string> all;
    for (std::string text; std::getline(in, text);)
    {
        all.push_back(text);
    }
    return all;
}

Step readStep(std::string const& mode, std::string const& dir)
{
    Step s{mode, dir, {}, {}};
    for (std::string const& text : lines(dir + "/step.txt"))
    {
        std::istringstream line(text);
        std::string key;
        line >> key;
        if (key == "input" || key == "output")
        {
            (key == "input" ? s.inputs : s.outputs).push_back(readTensorLine(line, dir + "/step.txt"));
        }
        else if (!key.empty())
        {
            fatal(dir + "/step.txt: unknown line " + text);
        }
    }
    return s;
}

int32_t symbolIndex(std::string const& name)
{
    for (int32_t s = 0; s < spec::kNB_SYMBOLS; ++s)
    {
        if (name == spec::kSYMBOL_NAMES[s])
        {
            return s;
        }
    }
    fatal("unknown shape symbol " + name);
}

} // namespace

Case readCase(std::string const& dir)
{
    Case c;
    c.dir = dir;
    for (std::string const& text : lines(dir + "/case.txt"))
    {
        std::istringstream line(text);
        std::string key;
        line >> key;
        if (key == "plugin")
        {
            line >> c.plugin;
        }
        else if (key == "field")
        {
            std::string name, value;
            line >> name >> value;
            c.fields.addFloat(name, std::strtof(value.c_str(), nullptr)); // hex float: exact
        }
        else if (key == "intfield")
        {
            std::string name;
            int32_t value = 0;
            line >> name >> value;
            if (!line)
            {
                fatal(dir + "/case.txt: bad intfield line " + text);
            }
            c.fields.addRaw(name, &value, sizeof(value), nvinfer1::PluginFieldType::kINT32, 1);
        }
        else if (key == "profile")
        {
            std::string symbol;
            Range r;
            line >> symbol >> r.min >> r.opt >> r.max;
            r.dynamic = true;
            if (!line || r.min < 1 || r.min > r.opt || r.opt > r.max)
            {
                fatal(dir + "/case.txt: bad profile line " + text);
            }
            c.profile[symbolIndex(symbol)] = r;
        }
        else if (key == "alias")
        {
            int32_t o = 0, i = 0;
            line >> o >> i;
            c.aliases.emplace_back(o, i);
        }
        else if (key == "step")
        {
            std::string mode, folder;
            line >> mode >> folder;
            if (mode != "build" && mode != "shape" && mode != "graph")
            {
                fatal(dir + "/case.txt: unknown step mode " + mode);
            }
            c.steps.push_back(readStep(mode, dir + "/" + folder));
        }
        else if (!key.empty())
        {
            fatal(dir + "/case.txt: unknown line " + text);
        }
    }
    if (c.steps.empty() || c.steps.front().mode != "build"
        || std::count_if(c.steps.begin(), c.steps.end(), [](Step const& s) { return s.mode == "build"; }) != 1)
    {
        fatal(dir + ": the first step, and only it, must be the build step");
    }
    return c;
}

std::vector<char> readFile(std::string const& path, size_t bytes)
{
    std::ifstream in(path, std::ios::binary);
    std::vector<char> data(bytes);
    if (!in.read(data.data(), static_cast<std::streamsize>(bytes)) || in.peek() != EOF)
    {
        fatal(path + " does not hold exactly " + std::to_string(bytes) + " bytes");
    }
    return data;
}

void writeFile(std::string const& path, void const* data, size_t bytes)
{
    std::ofstream out(path, std::ios::binary);
    out.write(static_cast<char const*>(data), static_cast<std::streamsize>(bytes));
    if (!out)
    {
        fatal("cannot write " + path);
    }
}

} // namespace test
} // namespace trt
} // namespace edge_quamba
