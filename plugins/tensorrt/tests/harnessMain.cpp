// Drives the edge-quamba TensorRT plugins through their own IPluginV3 interfaces, without libnvinfer.
//
//   harness selftest        every interface method of every plugin, on the host only (no GPU needed): creator
//                           fields, createPlugin validation, serialization round trip, output dtypes and shapes
//                           (through the test-only IExprBuilder), formats, configurePlugin/onShapeChange, clone,
//                           and the host side of TensorRT's call order (selftest.cpp)
//   harness describe        what the creators and plugins declare, as JSON (tests compare it with the op specs)
//   harness run [--dry] [--no-timing] CASE_DIR...
//                           each case folder written by make_cases.py, in TensorRT's call order (trtOrder.cpp says
//                           which call comes when, on which object): build-time plugin with a min/opt/max profile,
//                           runtime plugin from the serialized fields attached to a context, onShapeChange through
//                           the case's lengths on that one object, decode replays of a captured CUDA graph; outputs
//                           are written next to the inputs (check_cases.py compares). --dry makes every interface
//                           call and no CUDA call (no GPU needed); --no-timing skips the cudaEvent timings (for
//                           compute-sanitizer runs).
//
// The plugins are linked in; creators come from the library's exported getCreators, as TensorRT gets them.
#include "harness.h"

#include <cstdio>
#include <string>
#include <vector>

int main(int argc, char** argv)
{
    namespace test = edge_quamba::trt::test;
    std::string const mode = argc > 1 ? argv[1] : "";
    if (mode == "selftest" && argc == 2)
    {
        return test::selftest();
    }
    if (mode == "describe" && argc == 2)
    {
        return test::describe();
    }
    if (mode == "run")
    {
        bool device = true;
        bool timing = true;
        std::vector<std::string> dirs;
        for (int a = 2; a < argc; ++a)
        {
            std::string const arg = argv[a];
            if (arg == "--dry")
            {
                device = false;
            }
            else if (arg == "--no-timing")
            {
                timing = false;
            }
            else
            {
                dirs.push_back(arg);
            }
        }
        if (!dirs.empty())
        {
            return test::runCases(dirs, device, timing);
        }
    }
    std::fprintf(stderr,
        "usage: harness selftest | harness describe | harness run [--dry] [--no-timing] CASE_DIR...\n");
    return 2;
}
