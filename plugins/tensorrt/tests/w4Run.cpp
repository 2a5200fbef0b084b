// Drives the plugins of the 4-bit configs (W4A8Linear, W4A8LinearQuantize, W4A16Linear: Int4LinearPlugin/;
// SelectiveScanF16: SelectiveScanF16Plugin/) through their own IPluginV3 interfaces, in TensorRT's call order,
// without libnvinfer. A separate executable from harness.cpp (the int8 plugins), linked against the plugin library
// and reaching the creators only through its exported getCreators, as TensorRT does.
//
//   w4_harness selftest         host only (w4Selftest.cpp): creator fields (kFLOAT32 scales, the kINT32 group_size,
//                               none for the scan), createPlugin validation, the serialization round trip,
//                               clone/attachToContext, getOutputShapes (constant and runtime dims; refusal of weight
//                               or scale widths that do not fit K and group_size, of K > 131071, of too many groups,
//                               of the scan's unsupported n and b), supportsFormatCombination, getOutputDataTypes,
//                               configurePlugin, onShapeChange
//   w4_harness run CASE_DIR...  each case of make_w4_cases.py: one plugin object's life in TensorRT (below); writes
//                               every step's outputs next to the expected ones (check_w4_cases.py compares) and the
//                               median time of each step to CASE_DIR/result.txt
//   w4_harness run --dry-run CASE_DIR...
//                               the same life without a GPU: every interface call in the same order and every input
//                               file read and sized, but no CUDA call (no enqueue, no output): checks a case set on a
//                               machine without a GPU
//
// A case's life, as TensorRT lives it: createPlugin(kBUILD) from the case's fields; getOutputDataTypes;
// getOutputShapes with the dims that change between steps as runtime expressions (they must pass through);
// supportsFormatCombination at every position; configurePlugin with min / max over the steps and the build step as
// opt; the build-time run (onShapeChange + enqueue on the build plugin, as a tactic timing run); then
// getFieldsToSerialize -> createPlugin(kRUNTIME) -> attachToContext, and on that one runtime object the steps in the
// case's order (onShapeChange whenever a dim changed, then enqueue), ending in a decode step captured once into a
// CUDA graph and replayed for new inputs copied into the captured buffers. Every output is poisoned before each run
// (int8: -128, which the requantizing epilogues never write; floats: NaN). Constant inputs (weights, scales, A, D)
// are uploaded once and stay in device memory for the whole life, as a network's constants do.
#include "deviceIo.h"
#include "w4Harness.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>

namespace
{
using namespace edge_quamba::trt::w4test;

// ---- run --------------------------------------------------------------------------------------------------------


DataType parseType(std::string const& type)
{
    if (type == "int8")
    {
        return DataType::kINT8;
    }
    if (type == "float16")
    {
        return DataType::kHALF;
    }
    if (type == "float32")
    {
        return DataType::kFLOAT;
    }
    fatal("unknown dtype " + type);
}

//! One input or output of a step: ``path`` relative to the case folder; a constant input is uploaded once.
struct Tensor
{
    std::string name;
    DataType type;
    Dims dims;
    std::string path;
    bool constant = false;
};

struct Step
{
    std::string mode; // build | shape | graph
    std::vector<std::string> dirs;
    std::vector<Tensor> inputs, outputs; // of dirs[0]; a graph step's dirs share the dims
};

//! case.txt, one item a line (make_w4_cases.py writes it):
//!   plugin NAME
//!   field NAME float HEXFLOAT | field NAME int VALUE        the ONNX attributes (hex floats: exact)
//!   step build|shape|graph DIR...                          in order (graph: one DIR per replay)
//! and each DIR/step.txt, in the plugin's input then output order:
//!   input NAME DTYPE RANK DIMS... PATH const|act           PATH relative to the case folder (constants: one file
//!                                                          shared by every step, uploaded once)
//!   output NAME DTYPE RANK DIMS... PATH                    the harness writes PATH (check_w4_cases.py compares)
struct Case
{
    std::string dir;
    std::string plugin;
    Fields fields;
    std::vector<Step> steps;
};

Tensor readTensor(std::istringstream& line, bool input)
{
    Tensor t;
    std::string type;
    int32_t rank = 0;
    line >> t.name >> type >> rank;
    t.type = parseType(type);
    std::vector<int64_t> d(rank);
    for (auto& v : d)
    {
        line >> v;
    }
    t.dims = makeDims(d);
    line >> t.path;
    if (input)
    {
        std::string kind;
        line >> kind;
        t.constant = kind == "const";
    }
    return t;
}

void readStep(std::string const& caseDir, Step& s)
{
    std::ifstream in(caseDir + "/" + s.dirs[0] + "/step.txt");
    if (!in)
    {
        fatal("cannot read " + caseDir + "/" + s.dirs[0] + "/step.txt");
    }
    std::string text;
    while (std::getline(in, text))
    {
        std::istringstream line(text);
        std::string key;
        line >> key;
        if (key == "input" || key == "output")
        {
            (key == "input" ? s.inputs : s.outputs).push_back(readTensor(line, key == "input"));
        }
        else if (!key.empty())
        {
            fatal(caseDir + "/" + s.dirs[0] + "/step.txt: unknown line " + text);
        }
    }
}

Case readCase(std::string const& dir)
{
    Case c;
    c.dir = dir;
    std::ifstream in(dir + "/case.txt");
    if (!in)
    {
        fatal("cannot read " + dir + "/case.txt");
    }
    std::string text;
    while (std::getline(in, text))
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
            std::string name, type, value;
            line >> name >> type >> value;
            if (type == "int")
            {
                c.fields.addInt(name, static_cast<int32_t>(std::strtol(value.c_str(), nullptr, 10)));
            }
            else
            {
                c.fields.addFloat(name, std::strtof(value.c_str(), nullptr));
            }
        }
        else if (key == "step")
        {
            Step s;
            line >> s.mode;
            std::string d;
            while (line >> d)
            {
                s.dirs.push_back(d);
            }
            if ((s.mode != "build" && s.mode != "shape" && s.mode != "graph") || s.dirs.empty())
            {
                fatal(dir + "/case.txt: bad step line " + text);
            }
            readStep(dir, s);
            c.steps.push_back(s);
        }
        else if (!key.empty())
        {
            fatal(dir + "/case.txt: unknown line " + text);
        }
    }
    if (c.steps.empty() || c.steps[0].mode != "build")
    {
        fatal(dir + "/case.txt: the first step must be the build-time run");
    }
    return c;
}

size_t bytesOf(Tensor const& t)
{
    return static_cast<size_t>(volume(t.dims)) * elementSize(t.type);
}

//! Device memory of one plugin object's life: each input and output position gets one buffer sized for its largest
//! step (a network's binding), constants are uploaded once.
class Buffers
{
public:
    Buffers(Case const& c, bool device)
        : mCase(c)
        , mDevice(device)
    {
        if (!device)
        {
            for (Step const& s : c.steps)
            {
                for (std::string const& dir : s.dirs)
                {
                    load(s, dir); // sizes every input file
                }
            }
            return;
        }
        CUDA_CHECK(cudaStreamCreate(&mStream));
        Step const& first = c.steps[0];
        mIn.assign(first.inputs.size(), nullptr);
        mOut.assign(first.outputs.size(), nullptr);
        std::vector<size_t> inBytes(mIn.size(), 1), outBytes(mOut.size(), 1);
        for (Step const& s : c.steps)
        {
            for (size_t i = 0; i < mIn.size(); ++i)
            {
                inBytes[i] = std::max(inBytes[i], bytesOf(s.inputs[i]));
            }
            for (size_t o = 0; o < mOut.size(); ++o)
            {
                outBytes[o] = std::max(outBytes[o], bytesOf(s.outputs[o]));
            }
        }
        for (size_t i = 0; i < mIn.size(); ++i)
        {
            CUDA_CHECK(cudaMalloc(&mIn[i], inBytes[i]));
            if (first.inputs[i].constant)
            {
                std::vector<char> host = readFile(c.dir + "/" + first.inputs[i].path, bytesOf(first.inputs[i]));
                CUDA_CHECK(cudaMemcpy(mIn[i], host.data(), host.size(), cudaMemcpyHostToDevice));
            }
        }
        for (size_t o = 0; o < mOut.size(); ++o)
        {
            CUDA_CHECK(cudaMalloc(&mOut[o], outBytes[o]));
        }
    }

    ~Buffers()
    {
        if (!mDevice)
        {
            return;
        }
        for (void* p : mIn)
        {
            cudaFree(p);
        }
        for (void* p : mOut)
        {
            cudaFree(p);
        }
        cudaStreamDestroy(mStream);
    }

    //! The step's per-call inputs of folder ``dir`` (same names and dims as the step's), into the bound buffers.
    void load(Step const& s, std::string const& dir)
    {
        for (size_t i = 0; i < s.inputs.size(); ++i)
        {
            if (!s.inputs[i].constant)
            {
                std::string const file = s.inputs[i].path.substr(s.inputs[i].path.find('/') + 1);
                std::vector<char> host = readFile(mCase.dir + "/" + dir + "/" + file, bytesOf(s.inputs[i]));
                if (!mDevice)
                {
                    continue;
                }
                CUDA_CHECK(cudaMemcpyAsync(mIn[i], host.data(), host.size(), cudaMemcpyHostToDevice, mStream));
                CUDA_CHECK(cudaStreamSynchronize(mStream)); // the host copy goes out of scope
            }
        }
    }

    //! int8 outputs: -128 (the requantizing epilogues write [-127, 127]); floats: all bits set (NaN).
    void poison(Step const& s)
    {
        for (size_t o = 0; o < s.outputs.size(); ++o)
        {
            int const byte = s.outputs[o].type == DataType::kINT8 ? 0x80 : 0xff;
            CUDA_CHECK(cudaMemsetAsync(mOut[o], byte, bytesOf(s.outputs[o]), mStream));
        }
    }

    void save(Step const& s, std::string const& dir)
    {
        for (size_t o = 0; o < s.outputs.size(); ++o)
        {
            std::vector<char> host(bytesOf(s.outputs[o]));
            CUDA_CHECK(cudaMemcpyAsync(host.data(), mOut[o], host.size(), cudaMemcpyDeviceToHost, mStream));
            CUDA_CHECK(cudaStreamSynchronize(mStream));
            std::string const file = s.outputs[o].path.substr(s.outputs[o].path.find('/') + 1);
            writeFile(mCase.dir + "/" + dir + "/" + file, host.data(), host.size());
        }
    }

    void enqueue(IPluginV3OneRuntime* runtime, Step const& s)
    {
        std::vector<PluginTensorDesc> in, out;
        for (Tensor const& t : s.inputs)
        {
            in.push_back(PluginTensorDesc{t.dims, t.type, TensorFormat::kLINEAR, 1.0F});
        }
        for (Tensor const& t : s.outputs)
        {
            out.push_back(PluginTensorDesc{t.dims, t.type, TensorFormat::kLINEAR, 1.0F});
        }
        std::vector<void const*> inputs(mIn.begin(), mIn.end());
        if (runtime->enqueue(in.data(), out.data(), inputs.data(), mOut.data(), nullptr, mStream) != 0)
        {
            fatal(mCase.dir + ": enqueue failed");
        }
    }

    cudaStream_t stream() const
    {
        return mStream;
    }

private:
    Case const& mCase;
    bool mDevice;
    std::vector<void*> mIn, mOut;
    cudaStream_t mStream{};
};

std::vector<PluginTensorDesc> descs(std::vector<Tensor> const& tensors)
{
    std::vector<PluginTensorDesc> d;
    for (Tensor const& t : tensors)
    {
        d.push_back(PluginTensorDesc{t.dims, t.type, TensorFormat::kLINEAR, 1.0F});
    }
    return d;
}

//! The build phase (file comment): output types and shapes with the dims that differ between steps as runtime
//! expressions, formats, configurePlugin with the steps' min and max and the build step's dims as opt.
IPluginV3* buildPhase(Case& c, IPluginCreatorV3One* creator)
{
    IPluginV3* plugin = creator->createPlugin(c.plugin.c_str(), c.fields.collection(), TensorRTPhase::kBUILD);
    if (plugin == nullptr)
    {
        fatal(c.dir + ": createPlugin refused the case's fields");
    }
    IPluginV3OneBuild* build = capabilities(plugin).build;
    Step const& opt = c.steps[0];
    int32_t const nbIn = static_cast<int32_t>(opt.inputs.size());
    int32_t const nbOut = static_cast<int32_t>(opt.outputs.size());
    if (build->getNbOutputs() != nbOut)
    {
        fatal(c.dir + ": the plugin has another number of outputs than the case");
    }
    std::vector<DataType> inTypes, outTypes(nbOut);
    for (Tensor const& t : opt.inputs)
    {
        inTypes.push_back(t.type);
    }
    if (build->getOutputDataTypes(outTypes.data(), nbOut, inTypes.data(), nbIn) != 0)
    {
        fatal(c.dir + ": getOutputDataTypes failed");
    }
    std::vector<DynamicPluginTensorDesc> io(nbIn + nbOut);
    for (int32_t k = 0; k < nbIn + nbOut; ++k)
    {
        Tensor const& t = k < nbIn ? opt.inputs[k] : opt.outputs[k - nbIn];
        if (k >= nbIn && outTypes[k - nbIn] != t.type)
        {
            fatal(c.dir + ": getOutputDataTypes disagrees with the case for " + t.name);
        }
        io[k].desc = PluginTensorDesc{t.dims, t.type, TensorFormat::kLINEAR, 1.0F};
        io[k].min = io[k].max = io[k].opt = t.dims;
        for (Step const& s : c.steps)
        {
            Dims const& d = k < nbIn ? s.inputs[k].dims : s.outputs[k - nbIn].dims;
            for (int32_t j = 0; j < d.nbDims; ++j)
            {
                io[k].min.d[j] = std::min(io[k].min.d[j], d.d[j]);
                io[k].max.d[j] = std::max(io[k].max.d[j], d.d[j]);
            }
        }
        for (int32_t j = 0; j < t.dims.nbDims; ++j)
        {
            if (io[k].min.d[j] != io[k].max.d[j])
            {
                io[k].desc.dims.d[j] = -1; // dynamic in the profile
            }
        }
    }
    // Output shapes from expressions: dynamic input dims are runtime symbols, which must pass through unchanged.
    TestExprBuilder builder;
    std::vector<DimsExprs> in(nbIn), out(nbOut);
    for (int32_t i = 0; i < nbIn; ++i)
    {
        in[i].nbDims = io[i].desc.dims.nbDims;
        for (int32_t j = 0; j < in[i].nbDims; ++j)
        {
            in[i].d[j] = io[i].desc.dims.d[j] < 0 ? builder.symbol() : builder.constant(io[i].desc.dims.d[j]);
        }
    }
    if (build->getOutputShapes(in.data(), nbIn, nullptr, 0, out.data(), nbOut, builder) != 0)
    {
        fatal(c.dir + ": getOutputShapes failed");
    }
    for (int32_t o = 0; o < nbOut; ++o)
    {
        Dims const& want = io[nbIn + o].desc.dims;
        bool same = out[o].nbDims == want.nbDims;
        for (int32_t j = 0; same && j < want.nbDims; ++j)
        {
            same = want.d[j] < 0 ? !out[o].d[j]->isConstant()
                                 : out[o].d[j]->isConstant() && out[o].d[j]->getConstantValue() == want.d[j];
        }
        if (!same)
        {
            fatal(c.dir + ": getOutputShapes disagrees with the case for " + opt.outputs[o].name);
        }
    }
    for (int32_t pos = 0; pos < nbIn + nbOut; ++pos)
    {
        if (!build->supportsFormatCombination(pos, io.data(), nbIn, nbOut))
        {
            fatal(c.dir + ": supportsFormatCombination refuses position " + std::to_string(pos));
        }
    }
    if (build->configurePlugin(io.data(), nbIn, &io[nbIn], nbOut) != 0)
    {
        fatal(c.dir + ": configurePlugin failed");
    }
    if (build->getWorkspaceSize(io.data(), nbIn, &io[nbIn], nbOut) != 0)
    {
        fatal(c.dir + ": the plugin asks for a workspace (the harness passes none)");
    }
    return plugin;
}

//! Median of 21 timed runs (identical work: no output feeds an input), microseconds.
double medianUs(Buffers& b, std::function<void()> const& launch)
{
    return edge_quamba::trt::test::medianMicroseconds(b.stream(), launch);
}

void runCase(Case& c, bool device)
{
    IPluginCreatorV3One* creator = findCreator(c.plugin);
    if (creator == nullptr)
    {
        fatal("no creator for " + c.plugin);
    }
    IPluginV3* buildPlugin = buildPhase(c, creator);
    Buffers buffers(c, device);

    // The engine: serialized fields -> runtime plugin -> attached to a context. Steps after the build-time run use
    // the attached object, onShapeChange only when a dim changed (as TensorRT calls it).
    IPluginV3* runtimePlugin = creator->createPlugin(
        c.plugin.c_str(), capabilities(buildPlugin).runtime->getFieldsToSerialize(), TensorRTPhase::kRUNTIME);
    IPluginV3* attached
        = runtimePlugin != nullptr ? capabilities(runtimePlugin).runtime->attachToContext(nullptr) : nullptr;
    if (attached == nullptr)
    {
        fatal(c.dir + ": the runtime plugin could not be created");
    }
    std::vector<PluginTensorDesc> lastIn;
    for (Step const& s : c.steps)
    {
        bool const build = s.mode == "build";
        IPluginV3OneRuntime* runtime = capabilities(build ? buildPlugin : attached).runtime;
        std::vector<PluginTensorDesc> in = descs(s.inputs), out = descs(s.outputs);
        bool changed = build || lastIn.size() != in.size();
        for (size_t i = 0; !changed && i < in.size(); ++i)
        {
            changed = volume(in[i].dims) != volume(lastIn[i].dims) || in[i].dims.nbDims != lastIn[i].dims.nbDims;
            for (int32_t j = 0; !changed && j < in[i].dims.nbDims; ++j)
            {
                changed = in[i].dims.d[j] != lastIn[i].dims.d[j];
            }
        }
        if (changed && runtime->onShapeChange(in.data(), static_cast<int32_t>(in.size()), out.data(),
                           static_cast<int32_t>(out.size()))
                != 0)
        {
            fatal(c.dir + ": onShapeChange failed at step " + s.dirs[0]);
        }
        if (!build)
        {
            lastIn = in;
        }
        if (!device)
        {
            std::printf("dry run %-40s %-18s %-5s %s%s\n", c.dir.c_str(), c.plugin.c_str(), s.mode.c_str(),
                s.dirs[0].c_str(), changed ? " (onShapeChange)" : "");
            continue;
        }
        double us = 0.0;
        if (s.mode == "graph")
        {
            // Capture one enqueue, then replay it for each folder's inputs copied into the captured buffers.
            cudaGraph_t graph{};
            cudaGraphExec_t exec{};
            buffers.load(s, s.dirs[0]);
            CUDA_CHECK(cudaStreamBeginCapture(buffers.stream(), cudaStreamCaptureModeThreadLocal));
            buffers.enqueue(runtime, s);
            CUDA_CHECK(cudaStreamEndCapture(buffers.stream(), &graph));
            CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
            for (std::string const& dir : s.dirs)
            {
                buffers.load(s, dir);
                buffers.poison(s);
                CUDA_CHECK(cudaGraphLaunch(exec, buffers.stream()));
                buffers.save(s, dir);
            }
            us = medianUs(buffers, [&] { CUDA_CHECK(cudaGraphLaunch(exec, buffers.stream())); });
            CUDA_CHECK(cudaGraphExecDestroy(exec));
            CUDA_CHECK(cudaGraphDestroy(graph));
        }
        else
        {
            buffers.load(s, s.dirs[0]);
            buffers.poison(s);
            buffers.enqueue(runtime, s);
            CUDA_CHECK(cudaGetLastError());
            buffers.save(s, s.dirs[0]);
            us = medianUs(buffers, [&] { buffers.enqueue(runtime, s); });
        }
        std::ofstream(c.dir + "/result.txt", std::ios::app)
            << s.mode << " " << s.dirs[0] << " " << s.dirs.size() << " median_us " << us << "\n";
        std::printf("ran %-44s %-18s %-5s %-14s x%zu median %9.2f us\n", c.dir.c_str(), c.plugin.c_str(),
            s.mode.c_str(), s.dirs[0].c_str(), s.dirs.size(), us);
    }
    delete attached;
    delete runtimePlugin;
    delete buildPlugin;
}

int run(int argc, char** argv)
{
    bool const device = std::string(argv[0]) != "--dry-run";
    if (device)
    {
        edge_quamba::trt::test::printDevice();
    }
    for (int a = device ? 0 : 1; a < argc; ++a)
    {
        Case c = readCase(argv[a]);
        std::remove((c.dir + "/result.txt").c_str());
        runCase(c, device);
    }
    return 0;
}

} // namespace

int main(int argc, char** argv)
{
    std::string const mode = argc > 1 ? argv[1] : "";
    if (mode == "selftest" && argc == 2)
    {
        return selftest();
    }
    if (mode == "run" && argc > 2)
    {
        return run(argc - 2, argv + 2);
    }
    std::fprintf(stderr, "usage: w4_harness selftest | w4_harness run [--dry-run] CASE_DIR...\n");
    return 2;
}
