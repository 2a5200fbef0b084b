"""TensorRT plugins (plugins/tensorrt): their generated spec header is current, they compile against TensorRT's
headers for sm_87 and sm_90, the host-side harness passes, what the compiled creators and plugins declare equals
the op specs, and the GPU run's tooling works here: make_cases.py writes cases whose every int8 activation input
holds -128, the harness's dry run drives them through the plugins in TensorRT's call order (every interface call, no
CUDA call), and check_cases.py passes the reference's own outputs and fails a plugin that reads -128 as -128. The
4-bit configs' plugins have their own harness, w4_harness: its selftest, a dry run of its small cases in TensorRT's
call order, and check_w4_cases.py holding each plugin to its contract.

The compile tests need a TensorRT include folder: EDGE_QUAMBA_TRT_INCLUDE (one folder, or several separated by
os.pathsep), else the ignored third_party/tensorrt-*/include folders of this checkout (plugins/tensorrt/README.md
says how to extract them); they also need nvcc, g++ and plugins/kernels. Without these they skip, saying which is
missing. No TensorRT library is needed or used: the harness drives the plugins through their own interfaces.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_quamba.ops.plugins import FIELD_TYPES, plugin_info, plugin_spec_header
from edge_quamba.ops.specs import PLUGIN_SPECS as SPECS  # the ops that have a plugin

REPO = Path(__file__).resolve().parents[1]
TRT_DIR = REPO / "plugins" / "tensorrt"
SPEC_HEADER = TRT_DIR / "common" / "opSpecs.h"
BUILD_SCRIPT = TRT_DIR / "tests" / "build_harness.sh"
GPU_SCRIPT = TRT_DIR / "tests" / "run_on_gpu.sh"
KERNELS_DIR = Path(os.environ.get("EDGE_QUAMBA_KERNELS_DIR", REPO / "plugins" / "kernels"))
FIELD_TYPE_VALUES = {"FLOAT32": 1, "INT32": 5}  # nvinfer1::PluginFieldType::kFLOAT32, kINT32


def trt_include_dirs() -> list[Path]:
    if os.environ.get("EDGE_QUAMBA_TRT_INCLUDE"):
        return [Path(p) for p in os.environ["EDGE_QUAMBA_TRT_INCLUDE"].split(os.pathsep) if p]
    return sorted(p for p in (REPO / "third_party").glob("tensorrt-*/include") if p.is_dir())


def header_version(include: Path) -> str:
    text = (include / "NvInferVersion.h").read_text(encoding="utf-8")
    values = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "#define":
            values[parts[1]] = parts[2]
    resolve = lambda name: values.get(values.get(name, ""), values.get(name, "?"))  # noqa: E731
    return ".".join(resolve(f"NV_TENSORRT_{p}") for p in ("MAJOR", "MINOR", "PATCH"))


def skip_reason() -> str | None:
    if not trt_include_dirs():
        return ("no TensorRT include folder: set EDGE_QUAMBA_TRT_INCLUDE or extract the headers into "
                "third_party/tensorrt-*/include (plugins/tensorrt/README.md)")
    missing = [tool for tool in ("nvcc", "g++") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not found"
    if not (KERNELS_DIR / "causal_conv1d.h").is_file():
        return f"{KERNELS_DIR} holds no kernel launchers (the kernels branch is not merged here)"
    return None


needs_build = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")


def test_spec_header_is_current():
    text = SPEC_HEADER.read_text(encoding="utf-8")
    assert text == plugin_spec_header(), ("plugins/tensorrt/common/opSpecs.h is stale: regenerate it with "
                                          "python3 -m edge_quamba.ops.plugins --header plugins/tensorrt/common/opSpecs.h")


def test_spec_header_states_every_field_and_dtype():
    text = SPEC_HEADER.read_text(encoding="utf-8")
    for spec in SPECS.values():
        fields = ", ".join(f'"{f.name}"' for f in plugin_info(spec).fields)
        if spec.attributes:
            assert f"kFIELD_NAMES[{len(spec.attributes)}] = {{{fields}}};" in text
        else:  # C++ has no zero-length arrays: one unused entry, kNB_FIELDS 0
            assert "kNB_FIELDS = 0;\n    static constexpr char const* kFIELD_NAMES[1] = {nullptr};" in text
        inputs = ", ".join(f'"{t.name}"' for t in spec.inputs)
        assert f"kINPUT_NAMES[{len(spec.inputs)}] = {{{inputs}}};" in text


@pytest.fixture(scope="module", params=[(inc, sm) for inc in trt_include_dirs() for sm in (87, 90)] or [None],
                ids=lambda p: "none" if p is None else f"{p[0].parent.name}-sm{p[1]}")
def built(request, tmp_path_factory):
    """The library and the harness, compiled here against one header version for one architecture."""
    if request.param is None or skip_reason() is not None:
        pytest.skip(skip_reason() or "no TensorRT include folder")
    include, sm = request.param
    out = tmp_path_factory.mktemp(f"trt-{include.parent.name}-sm{sm}")
    env = dict(os.environ, KERNELS_DIR=str(KERNELS_DIR))
    result = subprocess.run(["bash", str(BUILD_SCRIPT), str(include), str(sm), str(out)], env=env,
                            capture_output=True, text=True, timeout=600)
    print(result.stdout[-2000:], result.stderr[-4000:])
    assert result.returncode == 0, f"build failed against TensorRT {header_version(include)} headers for sm_{sm}"
    print(f"compiled against TensorRT {header_version(include)} headers ({include}) for sm_{sm}")
    return out


@needs_build
def test_library_exports_only_the_loader_entry_points(built):
    result = subprocess.run(["nm", "-D", "--defined-only", str(built / "libedge_quamba_trt_plugins.so")],
                            capture_output=True, text=True, check=True)
    exported = sorted(line.split()[-1] for line in result.stdout.splitlines() if " T " in line)
    print(exported)
    assert exported == ["getCreators", "setLoggerFinder"]
    ldd = subprocess.run(["ldd", str(built / "libedge_quamba_trt_plugins.so")], capture_output=True, text=True)
    assert "libnvinfer" not in ldd.stdout


@needs_build
def test_harness_selftest_passes(built):
    """Every interface method of every plugin, host side: fields, validation, serialization, shapes, formats."""
    result = subprocess.run([str(built / "harness"), "selftest"], capture_output=True, text=True, timeout=120)
    print(result.stdout[-3000:])
    assert result.returncode == 0
    assert "0 failed" in result.stdout


@needs_build
def test_w4_harness_selftest_passes(built):
    """The plugins of the 4-bit configs, host side, reached through the library's getCreators: the linears' kINT32
    group_size field, validation, the exact serialization round trip, output shapes (b, l, N) with runtime b and l,
    refusal of weight or scale widths that do not fit K and group_size, of K > 131071 and of more groups than the
    kernels hold; the float16 scan's shapes, its n and b limits and dtypes."""
    result = subprocess.run([str(built / "w4_harness"), "selftest"], capture_output=True, text=True, timeout=120)
    print(result.stdout[-3000:], result.stderr[-3000:])
    assert result.returncode == 0
    assert "selftest: " in result.stdout and " 0 failed" in result.stdout


@needs_build
def test_compiled_plugins_declare_the_op_specs(built):
    """The compiled creators and plugins, asked through their interfaces, declare exactly the specs: name, version,
    namespace, fields (kFLOAT32 scales, kINT32 group sizes, length 1), the dtype accepted at each input and output,
    and the output dtypes."""
    result = subprocess.run([str(built / "harness"), "describe"], capture_output=True, text=True, timeout=60,
                            check=True)
    described = {entry["name"]: entry for entry in json.loads(result.stdout)}
    print(json.dumps(described, indent=1)[:3000])
    assert sorted(described) == sorted(SPECS)
    for name, spec in SPECS.items():
        entry = described[name]
        assert entry["interface"] == "PLUGIN CREATOR_V3ONE"
        assert (entry["version"], entry["namespace"]) == (str(spec.version), "")
        assert entry["fields"] == [[a.name, FIELD_TYPE_VALUES[FIELD_TYPES[a.kind]], 1] for a in spec.attributes]
        assert entry["inputs"] == [t.dtype for t in spec.inputs]
        assert entry["outputs"] == [[t.dtype, t.dtype] for t in spec.outputs]


# ---- the GPU run's tooling, on the CPU ---------------------------------------------------------------------------


def _load(name: str):
    """plugins/tensorrt/tests/<name>.py as a module (the folder is not a package)."""
    folder = str(TRT_DIR / "tests")
    if folder not in sys.path:
        sys.path.insert(0, folder)  # check_cases imports make_cases by name, as when run as a script
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, TRT_DIR / "tests" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up; check_cases imports make_cases by this name
    spec.loader.exec_module(module)
    return module


make_cases = _load("make_cases")
check_cases = _load("check_cases")

TINY = tuple(make_cases.Case(f"{op}-tiny", op, 64, ((1, 1), (2, 3), (1, 9), (2, 5), (1, 3)), opt=(1, 5), decode_b=2,
                             replays=3, seed=i, headdim=16, ngroups=2)
             for i, op in enumerate(make_cases.MAMBA1_OPS + make_cases.MAMBA2_OPS))
"""The case sets' structure at d_inner 64 (a supported Hadamard size; Mamba2: 4 heads of 16, 2 groups of 16 states),
l <= 9: cheap on the CPU."""


@pytest.fixture(scope="module")
def tiny_cases(tmp_path_factory) -> list[Path]:
    out = tmp_path_factory.mktemp("cases")
    return [make_cases.write_case(case, out) for case in TINY]


def _fake_harness(case_dir: Path, outputs=None) -> None:
    """Write what a correct harness run writes: each step's outputs (the reference's unless ``outputs(step)`` gives
    others) and the in-place run's copies."""
    case = check_cases.read_case(case_dir)
    for step in case["steps"]:
        values = outputs(case, step) if outputs else None
        for t in step.outputs:
            data = (step.folder / f"{t.file}.expected").read_bytes() if values is None else values[t.name]
            (step.folder / t.file).write_bytes(data)
            if case["aliases"] and step.mode != "build":
                (step.folder / f"{t.file}.alias").write_bytes(data)


def test_make_cases_sets_cover_the_tensorrt_order():
    """The model set: every op at d_inner 768 and 5120 (Mamba2's: the demo Mamba2's shapes and Mamba2-2.7b's, 80 heads
    of 64, d_state 128, one group), l 1, 7, 512, 2048 then back to 7 on one object, b changing at 768, profile
    min/opt/max around every shape, graph replays at l = 1."""
    model = make_cases.SETS["model"]
    assert sorted({(c.op, c.d_in) for c in model}) == sorted(
        (op, d) for op in make_cases.MAMBA1_OPS + make_cases.MAMBA2_OPS for d in (768, 5120))
    assert set(make_cases.MAMBA1_OPS + make_cases.MAMBA2_OPS) == set(make_cases.PLUGIN_SPECS) - {
        "W4A8Linear", "W4A8LinearQuantize", "W4A16Linear", "SelectiveScanF16"}  # those: make_w4_cases.py
    big = {c.op: c for c in model if c.d_in == 5120}
    assert (big["Int8SSDScan"].n, big["Int8SSDScan"].ngroups, big["Int8SSDScan"].headdim) == (128, 1, 64)
    assert big["Int8CausalConv1dChannelScales"].conv_dim == 5376
    for case in model:
        print(case.name, case.shapes, case.profile())
        assert [l for _, l in case.shapes] == [1, 7, 512, 2048, 7]
        assert case.profile()["l"] == (1, 512, 2048) and case.replays >= 3
        assert {b for b, _ in case.shapes} == ({1, 2} if case.d_in == 768 else {1})
    assert max(l for c in make_cases.SETS["small"] for _, l in c.shapes) <= 200


def test_make_cases_every_activation_input_holds_minus_128(tiny_cases):
    """Every int8 activation input the plugins read from a case file holds -128 (TensorRT's saturating
    QuantizeLinear can write it; every op reads it as -127); the conv weight and the reference's states never do."""
    for case_dir in tiny_cases:
        case = check_cases.read_case(case_dir)
        spec = make_cases.PLUGIN_SPECS[case["plugin"]]
        carried = {spec.inputs[i].name for _, i in case["aliases"]}
        replay = 0
        for step in case["steps"]:
            skip = carried if step.mode == "graph" and replay > 0 else set()
            replay += step.mode == "graph"
            for t in step.inputs:
                if t.dtype != "int8":
                    continue
                values = check_cases.load(step.folder / t.file, t.dtype, t.shape)
                count = int((values == -128).sum())
                print(f"{step.folder.parent.name}/{step.folder.name} {t.name}: {count} codes of -128")
                if t.name == "weight_q":
                    assert count == 0
                elif t.name not in skip:
                    assert count >= 1, f"{step.folder}: {t.name} holds no -128"
            for t in step.outputs:
                if t.dtype == "int8":
                    assert int(check_cases.load(step.folder / f"{t.file}.expected", t.dtype, t.shape).min()) >= -127


def test_check_cases_passes_the_reference_and_fails_poison(tiny_cases, tmp_path):
    """A harness that wrote the reference's outputs passes every step (in-place copies included); an output left
    poisoned (NaN, -128) or an in-place run that differs fails, naming the step."""
    for case_dir in tiny_cases:
        _fake_harness(case_dir)
    assert check_cases.main([str(p) for p in tiny_cases] + ["--detail", str(tmp_path / "detail.txt")]) == 0
    detail = (tmp_path / "detail.txt").read_text(encoding="utf-8").splitlines()
    assert len(detail) == sum(len(check_case_rows) for check_case_rows in
                              (check_cases.check_case(p)[0] for p in tiny_cases))
    conv, scan = tiny_cases[0], tiny_cases[1]
    step = check_cases.read_case(scan)["steps"][3]
    y = step.folder / "y.bin"
    good = y.read_bytes()
    y.write_bytes(good[:-4] + b"\xff\xff\xff\xff")  # the harness's float32 poison left in the last element
    rows, _ = check_cases.check_case(scan)
    assert [(r["step"], r["output"]) for r in rows if not r["ok"]] == [(step.folder.name, "y"),
                                                                      (step.folder.name, "y (in place)")]
    y.write_bytes(good)
    graph = [s for s in check_cases.read_case(conv)["steps"] if s.mode == "graph"][-1]
    alias = graph.folder / "conv_state_out.bin.alias"
    alias.write_bytes(b"\x80" + alias.read_bytes()[1:])  # int8 poison in the in-place state
    rows, _ = check_cases.check_case(conv)
    assert [(r["step"], r["output"]) for r in rows if not r["ok"]] == [(graph.folder.name, "conv_state_out (in place)")]
    _fake_harness(conv)


def _outputs_reading_raw(monkeypatch, raw_input: str | None):
    """outputs(case, step) for _fake_harness: the reference with -128 read as -128, in every int8 input (None) or in
    one named input, as a plugin that skipped read_codes there would compute."""
    from edge_quamba.quant import primitives, qops

    def outputs(case, step):
        spec = make_cases.PLUGIN_SPECS[case["plugin"]]
        inputs = {t.name: check_cases.load(step.folder / t.file, t.dtype, t.shape) for t in step.inputs}
        original = primitives.read_codes
        target = inputs.get(raw_input)
        with monkeypatch.context() as m:
            if raw_input is None:
                m.setattr(qops, "read_codes", lambda q: q)
                m.setattr(primitives, "read_codes", lambda q: q)
            else:
                m.setattr(primitives, "read_codes", lambda q: q if q is target else original(q))
            got = getattr(qops, spec.reference)(*(inputs[t.name] for t in spec.inputs),
                                                *(case["fields"][a.name] for a in spec.attributes))
        got = got if isinstance(got, tuple) else (got,)
        return {t.name: v.contiguous().numpy().tobytes() for t, v in zip(step.outputs, got, strict=True)}
    return outputs


def test_check_cases_catches_a_plugin_that_reads_minus_128_raw(tiny_cases, monkeypatch):
    """The cases prove the -128 rule: a conv plugin reading -128 as -128 fails (codes and state differ), and so does
    a scan plugin that does it in any one of its five int8 inputs (u, dt, B, C, z); Mamba2's: the per-channel conv,
    the SSD scan in any of x, dt, B, C, and both gated norms in z."""
    conv, scan = tiny_cases[0], tiny_cases[1]
    _fake_harness(conv, _outputs_reading_raw(monkeypatch, None))
    rows, _ = check_cases.check_case(conv)
    failed = {r["output"] for r in rows if not r["ok"]}
    print("conv read raw: failing outputs", sorted(failed), sum(not r["ok"] for r in rows), "of", len(rows), "rows")
    assert {"u_q", "conv_state_out"} <= failed
    _fake_harness(conv)
    by_op = {check_cases.read_case(c)["plugin"]: c for c in tiny_cases}
    raw_inputs = {"Int8SelectiveScan": ("u_q", "dt_q", "B_q", "C_q", "z_q"),
                  "Int8CausalConv1dChannelScales": (None,), "Int8SSDScan": ("x_q", "dt_q", "B_q", "C_q"),
                  "GatedRMSNormQuantize": ("z_q",), "GatedRMSNormHadamardQuantize": ("z_q",)}
    for op, names in raw_inputs.items():
        for name in names:
            _fake_harness(by_op[op], _outputs_reading_raw(monkeypatch, name))
            rows, _ = check_cases.check_case(by_op[op])
            failing = [r["step"] for r in rows if not r["ok"]]
            print(f"{op} reading {name or 'every int8 input'} raw: {len(failing)} of {len(rows)} rows fail")
            assert failing, f"a {op} plugin that reads {name}'s -128 raw would pass"
        _fake_harness(by_op[op])


@needs_build
def test_harness_dry_run_drives_the_cases_in_tensorrt_order(built, tiny_cases):
    """`harness run --dry`: every case file parses, and each plugin goes through the build phase (clone, output
    shapes, format search, configurePlugin with the profile, workspace, opt run), the runtime phase (kRUNTIME plugin
    from the copied fields, attachToContext, onShapeChange through every step on one object) and the decode context
    (clone, attachToContext on the clone, onShapeChange), with no CUDA call."""
    result = subprocess.run([str(built / "harness"), "run", "--dry", *map(str, tiny_cases)], capture_output=True,
                            text=True, timeout=120)
    print(result.stdout[-3000:], result.stderr[-2000:])
    assert result.returncode == 0 and "0 failed" in result.stdout
    for case in TINY:
        line = next(line for line in result.stdout.splitlines() if f"{case.name} (" in line)
        assert "profile b 1/1/2 l 1/5/9" in line and f"{len(case.shapes)} shapes on one object" in line
        assert f"{case.replays} graph replays" in line


@needs_build
def test_harness_refuses_a_step_outside_the_profile(built, tiny_cases, tmp_path):
    """TensorRT never runs a shape outside the profile the plugin was configured with; the harness refuses a case
    that would."""
    case = tmp_path / "case"
    shutil.copytree(tiny_cases[1], case)
    text = (case / "case.txt").read_text(encoding="utf-8")
    (case / "case.txt").write_text(text.replace("profile l 1 5 9", "profile l 1 5 8"), encoding="utf-8")
    result = subprocess.run([str(built / "harness"), "run", "--dry", str(case)], capture_output=True, text=True,
                            timeout=60)
    print(result.stdout[-1000:], result.stderr[-1000:])
    assert result.returncode == 2 and "l is outside the profile" in result.stderr


def test_gpu_scripts_parse():
    """run_on_gpu.sh, trt_w4_plugins.sh and build_harness.sh are valid bash (a GPU run is one call: a syntax error
    wastes it)."""
    for script in (GPU_SCRIPT, W4_GPU_SCRIPT, BUILD_SCRIPT):
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr


# ---- the 4-bit configs' plugins (w4_harness) -------------------------------------------------------------------------


W4_CASES = TRT_DIR / "tests" / "make_w4_cases.py"
W4_CHECK = TRT_DIR / "tests" / "check_w4_cases.py"
W4_GPU_SCRIPT = REPO / "benchmarks" / "gpu" / "trt_w4_plugins.sh"


def make_w4_cases(out: Path, only: str = "") -> list[Path]:
    """The `small` w4 case set (make_w4_cases.py), or the cases whose name contains ``only``."""
    subprocess.run([sys.executable, str(W4_CASES), str(out), "--set", "small", "--only", only], check=True,
                   capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(REPO)))
    return sorted(out.iterdir())


@needs_build
def test_w4_cases_run_dry_in_tensorrts_call_order(built, tmp_path):
    """Every small case through w4_harness's whole TensorRT life without a GPU (--dry-run): the build phase with the
    steps' min/opt/max, getOutputShapes passing the changing dims through, onShapeChange on each change of b or l
    (also back to a shorter l), a CUDA-graph step; every input file read at its stated size."""
    cases = make_w4_cases(tmp_path)
    assert {c.name.split("-")[0] for c in cases} == {"W4A8Linear", "W4A8LinearQuantize", "W4A16Linear",
                                                     "SelectiveScanF16"}
    result = subprocess.run([str(built / "w4_harness"), "run", "--dry-run", *map(str, cases)], capture_output=True,
                            text=True, timeout=120)
    print(result.stdout[-2000:], result.stderr[-2000:])
    assert result.returncode == 0
    assert result.stdout.count(" graph ") == len(cases) and result.stdout.count(" build ") == len(cases)


def check_w4(cases: list[Path]) -> tuple[int, str]:
    result = subprocess.run([sys.executable, str(W4_CHECK), *map(str, cases)], capture_output=True, text=True,
                            timeout=120)
    print(result.stdout[-1500:])
    return result.returncode, result.stdout


def test_check_w4_cases_holds_each_plugin_to_its_contract(tmp_path):
    """check_w4_cases.py on outputs made here (no GPU): the references themselves pass; one float32 ulp off in
    W4A8Linear, a -128 (unwritten) code of W4A8LinearQuantize, W4A16Linear beyond its per-element bound, a NaN in
    the scan's state and a missing output each fail; W4A16Linear within its bound passes."""
    cases = {name: make_w4_cases(tmp_path / name, f"{name}-")[0] for name in
             ("W4A8Linear-out_proj", "W4A8LinearQuantize-dt_proj", "W4A16Linear-x_proj", "SelectiveScanF16")}
    for case in cases.values():
        for expected in case.glob("s*/*.bin.expected"):
            shutil.copyfile(expected, expected.with_suffix(""))  # a perfect run
    assert check_w4(list(cases.values()))[0] == 0

    def edit(case: Path, file: str, dtype, change) -> None:
        path = case / "s03" / file
        values = np.fromfile(path, dtype)
        change(values)
        values.tofile(path)

    w4a8 = cases["W4A8Linear-out_proj"]
    edit(w4a8, "y.bin", np.float32, lambda v: v.__setitem__(0, np.nextafter(v[0], np.float32(np.inf))))
    code, out = check_w4([w4a8])
    assert code == 1 and "FAIL W4A8Linear-out_proj" in out
    codes = cases["W4A8LinearQuantize-dt_proj"]
    edit(codes, "y_q.bin", np.int8, lambda v: v.__setitem__(5, -128))
    assert check_w4([codes])[0] == 1
    w4a16 = cases["W4A16Linear-x_proj"]
    ref = np.fromfile(w4a16 / "s03" / "y.bin.expected", np.float16).astype(np.float64)
    bound = np.fromfile(w4a16 / "s03" / "y.bin.bound", np.float32).astype(np.float64)
    inside = (ref + 0.5 * (2.0**-10 * np.abs(ref) + bound)).astype(np.float16)
    inside.tofile(w4a16 / "s03" / "y.bin")
    if np.array_equal(inside, ref.astype(np.float16)):  # the half step rounds back: move one float16 step instead
        np.nextafter(ref.astype(np.float16), np.float16(np.inf)).tofile(w4a16 / "s03" / "y.bin")
    assert check_w4([w4a16])[0] == 0
    (ref + 3 * (2.0**-10 * np.abs(ref) + bound) + 1e-3).astype(np.float16).tofile(w4a16 / "s03" / "y.bin")
    assert check_w4([w4a16])[0] == 1
    scan = cases["SelectiveScanF16"]
    edit(scan, "ssm_state_out.bin", np.float32, lambda v: v.__setitem__(3, np.nan))
    assert check_w4([scan])[0] == 1
    edit(scan, "ssm_state_out.bin", np.float32, lambda v: v.__setitem__(3, 0.0))
    (scan / "s06" / "y.bin").unlink()  # the first graph replay's output
    code, out = check_w4([scan])
    assert code == 1 and "no output" in out
