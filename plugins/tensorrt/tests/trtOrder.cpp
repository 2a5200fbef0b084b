// TEST ONLY: `harness run`: each case of make_cases.py driven through one plugin's interfaces in TensorRT's call
// order, as NvInferRuntime.h documents it (TensorRT 10.3 and 11.x: IPluginV3, IPluginV3OneBuild, IPluginV3OneRuntime,
// IPluginCreatorV3One), on the objects TensorRT would call:
//
// Build (IBuilder; the ONNX parser created the plugin from the node's attributes):
//   1. createPlugin(attributes, kBUILD): kCORE, kBUILD and kRUNTIME capabilities (a build-phase plugin needs all three)
//   2. clone(): the builder works on copies; the created plugin is deleted at once, so the copy must stand alone
//   3. getNbOutputs, getOutputDataTypes(the inputs' dtypes), getOutputShapes(b and l run-time expressions, d_in, n,
//      k constants): each output dim must be the spec's (the matching input's expression, or the same constant)
//   4. format search: supportsFormatCombination(pos, ...) for every (dtype, format) at each position, the earlier
//      positions fixed to what was accepted: only the spec's dtype in kLINEAR may be accepted
//   5. configurePlugin(DynamicPluginTensorDesc: desc.dims -1 at b and l, min/opt/max = the case's profile)
//   6. getWorkspaceSize(the same descs): allocated once, handed to every enqueue; getNbTactics (0: the default tactic)
//   7. the builder's timing run at the profile's opt: onShapeChange(opt dims), enqueue on its own exactly sized
//      buffers (the `build` step; its outputs are checked like every other step's)
//   8. getFieldsToSerialize(), deep-copied (the engine's bytes); the build-time plugin is deleted
// Runtime (IRuntime::deserializeCudaEngine, one IExecutionContext per attachToContext):
//   9. createPlugin(the copied fields, kRUNTIME): kCORE and kRUNTIME; no runtime object is ever configured
//  10. context A: attachToContext(a stub IPluginResourceContext) -> the object that runs every `shape` step in the
//      case's order (l 1, 7, 512, 2048, 7; b changing for d_inner 768) on I/O buffers sized for the profile's max:
//      setTactic(0), then per step onShapeChange(step dims), outputs poisoned, enqueue; then again with each state
//      output written into its input's buffer (in place), all outputs kept as FILE.alias
//  11. context B: clone() of the deserialized plugin, attachToContext(another stub) on the clone, the clone deleted;
//      the attached object runs decode as the project's TensorRT runtime will: onShapeChange(l = 1), one eager
//      enqueue (TensorRT's advice before capturing), the enqueue captured in CUDA graphs (cudaStreamCaptureModeGlobal:
//      a plugin that allocates or synchronizes in enqueue breaks the capture), one graph per state buffer set
//      (states ping-ponged between two buffers), replayed with each `graph` step's new inputs copied into the same
//      device buffers (the state carried on the device); then one graph with the states in place, replayed the same
//      way (outputs kept as FILE.alias).
//
// Poison: before every enqueue and graph launch whose outputs are checked, every output buffer is filled whole: int8
// with -128 (no plugin writes -128) and float32 with NaN; after it, the bytes past the step's shape must still be
// poison (no write outside the shape). The profile-sized input buffers are not initialized past what a step copies
// in, so compute-sanitizer's initcheck sees any read past the shape.
#include "deviceIo.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace edge_quamba
{
namespace trt
{
namespace test
{
namespace
{
using namespace nvinfer1;

// ---- shapes from the spec ------------------------------------------------------------------------------------------

//! The symbols' values in a step (from its inputs, checked against the spec's ranks and symbols).
template <class Spec>
Symbols symbolsOf(Step const& step)
{
    if (static_cast<int32_t>(step.inputs.size()) != Spec::kNB_INPUTS
        || static_cast<int32_t>(step.outputs.size()) != Spec::kNB_OUTPUTS)
    {
        fatal(step.dir + ": the step's inputs/outputs do not match " + Spec::kNAME + "'s spec");
    }
    Symbols sym;
    sym.fill(-1);
    for (int32_t i = 0; i < Spec::kNB_INPUTS; ++i)
    {
        Tensor const& t = step.inputs[i];
        if (t.name != Spec::kINPUT_NAMES[i] || t.type != Spec::kINPUT_TYPES[i]
            || t.dims.nbDims != Spec::kINPUT_RANKS[i])
        {
            fatal(step.dir + ": input " + t.name + " is not the spec's " + Spec::kINPUT_NAMES[i]);
        }
        for (int32_t j = 0; j < t.dims.nbDims; ++j)
        {
            int64_t& v = sym[Spec::kINPUT_DIMS[i][j]];
            if (v != -1 && v != t.dims.d[j])
            {
                fatal(step.dir + ": inconsistent " + spec::kSYMBOL_NAMES[Spec::kINPUT_DIMS[i][j]]);
            }
            v = t.dims.d[j];
        }
    }
    return sym;
}

template <class Spec>
Dims specShape(bool input, int32_t index, Symbols const& sym)
{
    int32_t const rank = input ? Spec::kINPUT_RANKS[index] : Spec::kOUTPUT_RANKS[index];
    Dims d{};
    d.nbDims = rank;
    for (int32_t j = 0; j < rank; ++j)
    {
        d.d[j] = sym[input ? Spec::kINPUT_DIMS[index][j] : Spec::kOUTPUT_DIMS[index][j]];
    }
    return d;
}

//! The symbols at the profile's min (0), opt (1) or max (2); the static symbols as in ``fixed``.
Symbols atProfile(Case const& c, Symbols const& fixed, int32_t which)
{
    Symbols sym = fixed;
    for (int32_t s = 0; s < spec::kNB_SYMBOLS; ++s)
    {
        Range const& r = c.profile[s];
        if (r.dynamic)
        {
            sym[s] = which == 0 ? r.min : which == 1 ? r.opt : r.max;
        }
    }
    return sym;
}

//! What configurePlugin and getWorkspaceSize get: -1 at the dynamic dims, the profile's min/opt/max.
template <class Spec>
std::vector<DynamicPluginTensorDesc> profileDescs(Case const& c, Symbols const& fixed, bool input)
{
    int32_t const n = input ? Spec::kNB_INPUTS : Spec::kNB_OUTPUTS;
    std::vector<DynamicPluginTensorDesc> descs(n);
    for (int32_t i = 0; i < n; ++i)
    {
        DynamicPluginTensorDesc& d = descs[i];
        d.min = specShape<Spec>(input, i, atProfile(c, fixed, 0));
        d.opt = specShape<Spec>(input, i, atProfile(c, fixed, 1));
        d.max = specShape<Spec>(input, i, atProfile(c, fixed, 2));
        d.desc.dims = d.opt;
        for (int32_t j = 0; j < d.desc.dims.nbDims; ++j)
        {
            int32_t const s = input ? Spec::kINPUT_DIMS[i][j] : Spec::kOUTPUT_DIMS[i][j];
            d.desc.dims.d[j] = c.profile[s].dynamic ? -1 : d.opt.d[j];
        }
        d.desc.type = input ? Spec::kINPUT_TYPES[i] : Spec::kOUTPUT_TYPES[i];
        d.desc.format = TensorFormat::kLINEAR;
        d.desc.scale = 1.0F;
    }
    return descs;
}

//! The runtime descs of a step: the inputs' dims, the outputs' from the spec (what getOutputShapes' expressions,
//! checked in the build phase, evaluate to); the step's output lines must agree.
template <class Spec>
Descs stepDescs(Step const& step)
{
    Symbols const sym = symbolsOf<Spec>(step);
    std::vector<PluginTensorDesc> in(Spec::kNB_INPUTS), out(Spec::kNB_OUTPUTS);
    for (int32_t i = 0; i < Spec::kNB_INPUTS; ++i)
    {
        in[i] = PluginTensorDesc{step.inputs[i].dims, Spec::kINPUT_TYPES[i], TensorFormat::kLINEAR, 1.0F};
    }
    for (int32_t o = 0; o < Spec::kNB_OUTPUTS; ++o)
    {
        Dims const d = specShape<Spec>(false, o, sym);
        Tensor const& t = step.outputs[o];
        bool same = t.name == Spec::kOUTPUT_NAMES[o] && t.type == Spec::kOUTPUT_TYPES[o] && t.dims.nbDims == d.nbDims;
        for (int32_t j = 0; same && j < d.nbDims; ++j)
        {
            same = t.dims.d[j] == d.d[j];
        }
        if (!same)
        {
            fatal(step.dir + ": output " + t.name + " is not the spec's " + Spec::kOUTPUT_NAMES[o] + " at these dims");
        }
        out[o] = PluginTensorDesc{d, Spec::kOUTPUT_TYPES[o], TensorFormat::kLINEAR, 1.0F};
    }
    return {in, out};
}

// ---- build phase ---------------------------------------------------------------------------------------------------

//! Step 3: getOutputShapes with one run-time expression per dynamic symbol, constants for the rest.
template <class Spec>
void checkOutputShapes(IPluginV3OneBuild* build, Case const& c, Symbols const& fixed)
{
    TestExprBuilder builder;
    std::array<IDimensionExpr const*, spec::kNB_SYMBOLS> exprs{};
    for (int32_t s = 0; s < spec::kNB_SYMBOLS; ++s)
    {
        exprs[s] = c.profile[s].dynamic ? builder.symbol() : builder.constant(fixed[s] < 0 ? 0 : fixed[s]);
    }
    std::vector<DimsExprs> in(Spec::kNB_INPUTS), out(Spec::kNB_OUTPUTS);
    for (int32_t i = 0; i < Spec::kNB_INPUTS; ++i)
    {
        in[i].nbDims = Spec::kINPUT_RANKS[i];
        for (int32_t j = 0; j < in[i].nbDims; ++j)
        {
            in[i].d[j] = exprs[Spec::kINPUT_DIMS[i][j]];
        }
    }
    int32_t const rc
        = build->getOutputShapes(in.data(), Spec::kNB_INPUTS, nullptr, 0, out.data(), Spec::kNB_OUTPUTS, builder);
    if (rc != 0)
    {
        fatal(c.dir + ": getOutputShapes failed on the profile's expressions");
    }
    for (int32_t o = 0; o < Spec::kNB_OUTPUTS; ++o)
    {
        bool ok = out[o].nbDims == Spec::kOUTPUT_RANKS[o];
        for (int32_t j = 0; ok && j < out[o].nbDims; ++j)
        {
            int32_t const s = Spec::kOUTPUT_DIMS[o][j];
            IDimensionExpr const* e = out[o].d[j];
            ok = e == exprs[s] || (!c.profile[s].dynamic && e != nullptr && e->isConstant()
                                      && e->getConstantValue() == fixed[s]);
        }
        check(ok, c.dir + ": getOutputShapes: output " + Spec::kOUTPUT_NAMES[o] + " has the spec's dims");
    }
}

//! Step 4: TensorRT's format search; only the spec's dtype in kLINEAR may be accepted at each position.
template <class Spec>
void checkFormatSearch(IPluginV3OneBuild* build, Case const& c, std::vector<DynamicPluginTensorDesc> io)
{
    int32_t const nbIO = Spec::kNB_INPUTS + Spec::kNB_OUTPUTS;
    for (int32_t pos = 0; pos < nbIO; ++pos)
    {
        DataType const want
            = pos < Spec::kNB_INPUTS ? Spec::kINPUT_TYPES[pos] : Spec::kOUTPUT_TYPES[pos - Spec::kNB_INPUTS];
        int32_t accepted = 0;
        bool wanted = false;
        for (int32_t t = 0; t < EnumMax<DataType>(); ++t)
        {
            for (int32_t f = 0; f < EnumMax<TensorFormat>(); ++f)
            {
                io[pos].desc.type = static_cast<DataType>(t);
                io[pos].desc.format = static_cast<TensorFormat>(f);
                if (build->supportsFormatCombination(pos, io.data(), Spec::kNB_INPUTS, Spec::kNB_OUTPUTS))
                {
                    ++accepted;
                    wanted = wanted || (io[pos].desc.type == want && io[pos].desc.format == TensorFormat::kLINEAR);
                }
            }
        }
        check(accepted == 1 && wanted,
            c.dir + ": format search at position " + std::to_string(pos) + " accepts exactly " + typeName(want)
                + " kLINEAR (" + std::to_string(accepted) + " accepted)");
        io[pos].desc.type = want;
        io[pos].desc.format = TensorFormat::kLINEAR;
    }
}

struct Options
{
    bool device;
    bool timing;
};

struct Built
{
    Fields engine;       // getFieldsToSerialize of the build-time plugin, deep-copied
    size_t workspace;    // getWorkspaceSize over the profile
    Symbols fixed;       // the build step's symbol values (d_in, n, k are the same in every step)
};

//! Steps 1-8. Returns what the engine keeps; every build-time object is deleted.
template <class Spec>
Built buildPhase(Case& c, IPluginCreatorV3One* creator, Options const& opts, cudaStream_t stream, std::ostream& log)
{
    IPluginV3* created = creator->createPlugin(c.plugin.c_str(), c.fields.collection(), TensorRTPhase::kBUILD);
    if (created == nullptr)
    {
        fatal(c.dir + ": createPlugin(kBUILD) refused the case's fields");
    }
    Capabilities const createdCaps = capabilities(created);
    check(createdCaps.core != nullptr && createdCaps.build != nullptr && createdCaps.runtime != nullptr,
        c.dir + ": the build-phase plugin has kCORE, kBUILD and kRUNTIME");
    IPluginV3* layer = created->clone();
    delete created;
    if (layer == nullptr)
    {
        fatal(c.dir + ": clone() of the build-phase plugin failed");
    }
    Capabilities const caps = capabilities(layer);
    if (caps.core == nullptr || caps.build == nullptr || caps.runtime == nullptr)
    {
        fatal(c.dir + ": the builder's clone lacks a capability");
    }
    Step const& buildStep = c.steps.front();
    Symbols const fixed = symbolsOf<Spec>(buildStep);

    check(caps.build->getNbOutputs() == Spec::kNB_OUTPUTS, c.dir + ": getNbOutputs");
    std::array<DataType, Spec::kNB_OUTPUTS> outTypes{};
    check(caps.build->getOutputDataTypes(outTypes.data(), Spec::kNB_OUTPUTS, Spec::kINPUT_TYPES, Spec::kNB_INPUTS) == 0
            && std::equal(outTypes.begin(), outTypes.end(), Spec::kOUTPUT_TYPES),
        c.dir + ": getOutputDataTypes gives the spec's dtypes");
    checkOutputShapes<Spec>(caps.build, c, fixed);

    std::vector<DynamicPluginTensorDesc> in = profileDescs<Spec>(c, fixed, true);
    std::vector<DynamicPluginTensorDesc> out = profileDescs<Spec>(c, fixed, false);
    std::vector<DynamicPluginTensorDesc> io(in);
    io.insert(io.end(), out.begin(), out.end());
    checkFormatSearch<Spec>(caps.build, c, io);
    if (caps.build->configurePlugin(in.data(), Spec::kNB_INPUTS, out.data(), Spec::kNB_OUTPUTS) != 0)
    {
        fatal(c.dir + ": configurePlugin refused the profile");
    }
    size_t const workspace = caps.build->getWorkspaceSize(in.data(), Spec::kNB_INPUTS, out.data(), Spec::kNB_OUTPUTS);
    check(caps.build->getNbTactics() == 0, c.dir + ": no custom tactics (the default tactic 0 only)");

    // The builder's timing run at opt, on its own buffers.
    Symbols const opt = atProfile(c, fixed, 1);
    check(symbolsOf<Spec>(buildStep) == opt, c.dir + ": the build step is at the profile's opt");
    auto const descs = stepDescs<Spec>(buildStep);
    if (caps.runtime->onShapeChange(descs.first.data(), Spec::kNB_INPUTS, descs.second.data(), Spec::kNB_OUTPUTS) != 0)
    {
        fatal(c.dir + ": build-time onShapeChange at opt failed");
    }
    if (opts.device)
    {
        std::vector<Buffer> buffers;
        Bindings b;
        std::vector<void*> inPtrs;
        for (PluginTensorDesc const& d : descs.first)
        {
            buffers.emplace_back(bytesOf(d), true);
            inPtrs.push_back(buffers.back().get());
            b.in.push_back(buffers.back().get());
        }
        for (PluginTensorDesc const& d : descs.second)
        {
            buffers.emplace_back(bytesOf(d), true);
            b.out.push_back(buffers.back().get());
            b.outCapacity.push_back(bytesOf(d));
            b.outIsInput.push_back(false);
        }
        Buffer ws(workspace, workspace > 0);
        loadInputs(buildStep, inPtrs, std::vector<bool>(Spec::kNB_INPUTS, false), stream);
        poison(b, descs.second, stream);
        enqueueOrDie(caps.runtime, descs, b, ws.get(), stream, buildStep.dir);
        CUDA_CHECK(cudaStreamSynchronize(stream));
        saveOutputs(b, descs.second, buildStep, "", "build-time enqueue");
    }
    Built built{Fields::copyOf(*caps.runtime->getFieldsToSerialize()), workspace, fixed};
    delete layer;
    log << "build: clone of the created plugin, profile";
    for (int32_t s = 0; s < spec::kNB_SYMBOLS; ++s)
    {
        if (c.profile[s].dynamic)
        {
            log << " " << spec::kSYMBOL_NAMES[s] << " " << c.profile[s].min << "/" << c.profile[s].opt << "/"
                << c.profile[s].max;
        }
    }
    log << ", workspace " << workspace << " B, timing run at opt";
    return built;
}

// ---- runtime phase -------------------------------------------------------------------------------------------------

//! The runtime's I/O buffers: one per input and output, sized for the profile's max, allocated once.
struct RuntimeBuffers
{
    std::vector<Buffer> in;
    std::vector<Buffer> out;
    Buffer workspace;

    std::vector<void*> inPtrs() const
    {
        std::vector<void*> p;
        for (Buffer const& b : in)
        {
            p.push_back(b.get());
        }
        return p;
    }
    //! Out of place: every input and output its own buffer.
    Bindings plain() const
    {
        Bindings b;
        for (Buffer const& buf : in)
        {
            b.in.push_back(buf.get());
        }
        for (Buffer const& buf : out)
        {
            b.out.push_back(buf.get());
            b.outCapacity.push_back(buf.bytes());
            b.outIsInput.push_back(false);
        }
        return b;
    }
};

//! TensorRT runs only shapes inside the profile the plugin was configured with (buffers are sized for its max).
template <class Spec>
void checkInProfile(Case const& c, Built const& built, Step const& step)
{
    Symbols const sym = symbolsOf<Spec>(step);
    for (int32_t s = 0; s < spec::kNB_SYMBOLS; ++s)
    {
        Range const& r = c.profile[s];
        if (r.dynamic ? (sym[s] < r.min || sym[s] > r.max) : sym[s] != built.fixed[s])
        {
            fatal(step.dir + ": " + spec::kSYMBOL_NAMES[s] + " is outside the profile");
        }
    }
}

//! Step 10, one `shape` step on the attached plugin of context A.
template <class Spec>
void shapeStep(Case const& c, Built const& built, Step const& step, IPluginV3OneRuntime* runtime,
    RuntimeBuffers const& buffers, Options const& opts, cudaStream_t stream, std::ofstream& results)
{
    checkInProfile<Spec>(c, built, step);
    auto const descs = stepDescs<Spec>(step);
    if (runtime->onShapeChange(descs.first.data(), Spec::kNB_INPUTS, descs.second.data(), Spec::kNB_OUTPUTS) != 0)
    {
        fatal(step.dir + ": onShapeChange failed");
    }
    if (!opts.device)
    {
        return;
    }
    std::vector<void*> const inPtrs = buffers.inPtrs();
    std::vector<bool> const none(Spec::kNB_INPUTS, false);
    Bindings const b = buffers.plain();
    loadInputs(step, inPtrs, none, stream);
    poison(b, descs.second, stream);
    enqueueOrDie(runtime, descs, b, buffers.workspace.get(), stream, step.dir);
    CUDA_CHECK(cudaStreamSynchronize(stream));
    saveOutputs(b, descs.second, step, "", "enqueue");
    if (opts.timing)
    {
        double const us = medianMicroseconds(
            stream, [&] { enqueueOrDie(runtime, descs, b, buffers.workspace.get(), stream, step.dir); });
        results << step.dir.substr(c.dir.size() + 1) << " enqueue_us " << us << "\n";
    }
    if (c.aliases.empty())
    {
        return;
    }
    // In place: each state output written into its input's buffer (the input restored first).
    Bindings inPlace = b;
    for (auto const& [o, i] : c.aliases)
    {
        inPlace.out[o] = inPtrs[i];
        inPlace.outIsInput[o] = true;
    }
    loadInputs(step, inPtrs, none, stream);
    poison(inPlace, descs.second, stream);
    enqueueOrDie(runtime, descs, inPlace, buffers.workspace.get(), stream, step.dir);
    CUDA_CHECK(cudaStreamSynchronize(stream));
    saveOutputs(inPlace, descs.second, step, ".alias", "enqueue in place");
}

//! Step 11: the `graph` steps on the attached clone of context B.
template <class Spec>
void graphSteps(Case const& c, Built const& built, std::vector<Step const*> const& steps, IPluginV3OneRuntime* runtime,
    RuntimeBuffers const& buffers, Options const& opts, cudaStream_t stream, std::ofstream& results, std::ostream& log)
{
    auto const descs = stepDescs<Spec>(*steps.front());
    for (Step const* s : steps)
    {
        checkInProfile<Spec>(c, built, *s);
        if (symbolsOf<Spec>(*s) != symbolsOf<Spec>(*steps.front()))
        {
            fatal(s->dir + ": the graph steps differ in shape (one captured graph replays one shape)");
        }
    }
    check(runtime->setTactic(0) == 0, c.dir + ": setTactic(0) on context B");
    if (runtime->onShapeChange(descs.first.data(), Spec::kNB_INPUTS, descs.second.data(), Spec::kNB_OUTPUTS) != 0)
    {
        fatal(steps.front()->dir + ": onShapeChange (decode) failed");
    }
    log << "; context B (clone, attached): " << steps.size() << " graph replays";
    if (!opts.device)
    {
        return;
    }
    // Ping-pong: set 0 reads the states from the input buffers and writes them to second buffers, set 1 back.
    std::vector<Buffer> second;
    std::vector<void*> const inPtrs = buffers.inPtrs();
    std::array<Bindings, 2> sets{buffers.plain(), buffers.plain()};
    Bindings inPlace = buffers.plain();
    std::vector<bool> carried(Spec::kNB_INPUTS, false);
    for (auto const& [o, i] : c.aliases)
    {
        second.emplace_back(buffers.in[i].bytes(), true);
        sets[0].out[o] = second.back().get();
        sets[0].outCapacity[o] = second.back().bytes();
        sets[1].in[i] = second.back().get();
        sets[1].out[o] = inPtrs[i]; // not set 1's input: poisoned like any output
        sets[1].outCapacity[o] = buffers.in[i].bytes();
        inPlace.out[o] = inPtrs[i];
        inPlace.outIsInput[o] = true;
        carried[i] = true;
    }
    std::vector<bool> const none(Spec::kNB_INPUTS, false);
    void* const ws = buffers.workspace.get();
    loadInputs(*steps.front(), inPtrs, none, stream);
    enqueueOrDie(runtime, descs, sets[0], ws, stream, c.dir + " (eager decode before capture)");
    CUDA_CHECK(cudaStreamSynchronize(stream));

    int32_t const nbSets = c.aliases.empty() ? 1 : 2;
    std::array<cudaGraphExec_t, 2> graphs{};
    for (int32_t k = 0; k < nbSets; ++k)
    {
        std::string const what = c.dir + " (graph, state set " + std::to_string(k) + ")";
        graphs[k] = captureGraph(runtime, descs, sets[k], ws, stream, what);
    }
    for (size_t r = 0; r < steps.size(); ++r)
    {
        Bindings const& b = sets[r % nbSets];
        loadInputs(*steps[r], inPtrs, r == 0 ? none : carried, stream);
        poison(b, descs.second, stream);
        CUDA_CHECK(cudaGraphLaunch(graphs[r % nbSets], stream));
        CUDA_CHECK(cudaStreamSynchronize(stream));
        // A replay that ends in set 0 left its states in the second buffers: the next replay (set 1) reads them.
        saveOutputs(b, descs.second, *steps[r], "", "graph replay " + std::to_string(r));
    }
    if (!c.aliases.empty())
    {
        cudaGraphExec_t const g
            = captureGraph(runtime, descs, inPlace, ws, stream, c.dir + " (graph, states in place)");
        for (size_t r = 0; r < steps.size(); ++r)
        {
            loadInputs(*steps[r], inPtrs, r == 0 ? none : carried, stream);
            poison(inPlace, descs.second, stream);
            CUDA_CHECK(cudaGraphLaunch(g, stream));
            CUDA_CHECK(cudaStreamSynchronize(stream));
            saveOutputs(inPlace, descs.second, *steps[r], ".alias", "graph replay in place " + std::to_string(r));
        }
        CUDA_CHECK(cudaGraphExecDestroy(g));
        log << " ping-ponged + " << steps.size() << " in place";
    }
    if (opts.timing)
    {
        double const graphUs = medianMicroseconds(stream, [&] { CUDA_CHECK(cudaGraphLaunch(graphs[0], stream)); });
        double const eagerUs
            = medianMicroseconds(stream, [&] { enqueueOrDie(runtime, descs, sets[0], ws, stream, c.dir); });
        results << "graph_launch_us " << graphUs << "\ndecode_enqueue_us " << eagerUs << "\n";
        log << ", launch " << graphUs << " us (eager enqueue " << eagerUs << " us)";
    }
    for (int32_t k = 0; k < nbSets; ++k)
    {
        CUDA_CHECK(cudaGraphExecDestroy(graphs[k]));
    }
}

//! Steps 9-11.
template <class Spec>
void runtimePhase(Case& c, IPluginCreatorV3One* creator, Built& built, Options const& opts, cudaStream_t stream,
    std::ostream& log)
{
    IPluginV3* engine = creator->createPlugin(c.plugin.c_str(), built.engine.collection(), TensorRTPhase::kRUNTIME);
    if (engine == nullptr)
    {
        fatal(c.dir + ": createPlugin(kRUNTIME) refused the serialized fields");
    }
    Capabilities const engineCaps = capabilities(engine);
    if (engineCaps.core == nullptr || engineCaps.runtime == nullptr)
    {
        fatal(c.dir + ": the runtime-phase plugin lacks kCORE or kRUNTIME");
    }
    check(std::string(engineCaps.core->getPluginName()) == creator->getPluginName()
            && std::string(engineCaps.core->getPluginVersion()) == creator->getPluginVersion()
            && std::string(engineCaps.core->getPluginNamespace()) == creator->getPluginNamespace(),
        c.dir + ": the runtime plugin's name, version and namespace are its creator's");

    StubResourceContext contextA;
    StubResourceContext contextB;
    IPluginV3* attached = engineCaps.runtime->attachToContext(&contextA);
    if (attached == nullptr || capabilities(attached).runtime == nullptr)
    {
        fatal(c.dir + ": attachToContext (context A) failed");
    }
    check(attached != engine, c.dir + ": attachToContext returns a new object");
    IPluginV3OneRuntime* runtimeA = capabilities(attached).runtime;
    check(runtimeA->setTactic(0) == 0, c.dir + ": setTactic(0) on context A");

    RuntimeBuffers buffers;
    Symbols const max = atProfile(c, built.fixed, 2);
    for (int32_t i = 0; i < Spec::kNB_INPUTS; ++i)
    {
        size_t const bytes = volume(specShape<Spec>(true, i, max)) * elementSize(Spec::kINPUT_TYPES[i]);
        buffers.in.emplace_back(bytes, opts.device);
    }
    for (int32_t o = 0; o < Spec::kNB_OUTPUTS; ++o)
    {
        size_t const bytes = volume(specShape<Spec>(false, o, max)) * elementSize(Spec::kOUTPUT_TYPES[o]);
        buffers.out.emplace_back(bytes, opts.device);
    }
    buffers.workspace = Buffer(built.workspace, opts.device && built.workspace > 0);

    std::ofstream results;
    if (opts.device)
    {
        results.open(c.dir + "/result.txt");
    }
    std::vector<Step const*> decode;
    int32_t shapes = 0;
    for (Step const& step : c.steps)
    {
        if (step.mode == "shape")
        {
            shapeStep<Spec>(c, built, step, runtimeA, buffers, opts, stream, results);
            ++shapes;
        }
        else if (step.mode == "graph")
        {
            decode.push_back(&step);
        }
    }
    log << "; context A (attached): " << shapes << " shapes on one object" << (c.aliases.empty() ? "" : ", + in place");

    if (!decode.empty())
    {
        IPluginV3* copy = engine->clone();
        IPluginV3* attachedB = copy != nullptr ? capabilities(copy).runtime->attachToContext(&contextB) : nullptr;
        delete copy;
        if (attachedB == nullptr || capabilities(attachedB).runtime == nullptr)
        {
            fatal(c.dir + ": clone + attachToContext (context B) failed");
        }
        check(attachedB != attached, c.dir + ": context B has its own plugin object");
        graphSteps<Spec>(c, built, decode, capabilities(attachedB).runtime, buffers, opts, stream, results, log);
        delete attachedB;
    }
    check(contextA.requests() == 0 && contextB.requests() == 0,
        c.dir + ": the plugin asks the resource context for nothing (the stub has nothing to give)");
    delete attached;
    delete engine;
}

template <class Spec>
void runCase(Case& c, Options const& opts, cudaStream_t stream)
{
    IPluginCreatorV3One* creator = findCreator(c.plugin);
    if (creator == nullptr)
    {
        fatal("no creator for " + c.plugin);
    }
    std::ostringstream log;
    Built built = buildPhase<Spec>(c, creator, opts, stream, log);
    runtimePhase<Spec>(c, creator, built, opts, stream, log);
    std::printf("ran %s (%s): %s\n", c.dir.c_str(), c.plugin.c_str(), log.str().c_str());
}

} // namespace

int runCases(std::vector<std::string> const& dirs, bool device, bool timing)
{
    Options const opts{device, timing && device};
    cudaStream_t stream = nullptr;
    if (device)
    {
        printDevice();
        CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    }
    else
    {
        std::printf("dry run: every interface call, no CUDA call\n");
    }
    for (std::string const& dir : dirs)
    {
        Case c = readCase(dir);
        if (c.plugin == spec::Int8CausalConv1d::kNAME)
        {
            runCase<spec::Int8CausalConv1d>(c, opts, stream);
        }
        else if (c.plugin == spec::Int8SelectiveScan::kNAME)
        {
            runCase<spec::Int8SelectiveScan>(c, opts, stream);
        }
        else if (c.plugin == spec::HadamardQuantize::kNAME)
        {
            runCase<spec::HadamardQuantize>(c, opts, stream);
        }
        else if (c.plugin == spec::Int8CausalConv1dChannelScales::kNAME)
        {
            runCase<spec::Int8CausalConv1dChannelScales>(c, opts, stream);
        }
        else if (c.plugin == spec::Int8SSDScan::kNAME)
        {
            runCase<spec::Int8SSDScan>(c, opts, stream);
        }
        else if (c.plugin == spec::GatedRMSNormQuantize::kNAME)
        {
            runCase<spec::GatedRMSNormQuantize>(c, opts, stream);
        }
        else if (c.plugin == spec::GatedRMSNormHadamardQuantize::kNAME)
        {
            runCase<spec::GatedRMSNormHadamardQuantize>(c, opts, stream);
        }
        else
        {
            fatal(dir + ": no plugin " + c.plugin);
        }
    }
    if (device)
    {
        CUDA_CHECK(cudaStreamDestroy(stream));
        CUDA_CHECK(cudaDeviceSynchronize());
    }
    std::printf("run: %d checks, %d failed\n", checkCount(), failureCount());
    return failureCount() == 0 ? 0 : 1;
}

} // namespace test
} // namespace trt
} // namespace edge_quamba
