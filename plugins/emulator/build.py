"""Build the kernel emulator: plugins/kernels/*.cu and plugins/torch/binding.cpp compiled as C++ for CPU tensors.

    python3 plugins/emulator/build.py [--asan] [--build-dir DIR]

Each .cu file without inline PTX (``asm``, in it or in a .cuh it includes: the int4 mma kernels) is copied with two
rewrites, ``kernel<<<grid, block, smem, stream>>>(args);`` ->
``emu::launch(grid, block, smem, stream, [=]() { kernel(args); });`` and ``extern __shared__ T name[];`` -> a pointer to
the launch's dynamic shared memory; the binding with ``.is_cuda()`` -> ``.is_cpu()``. include/ stands in for
<cuda_runtime.h>, <cuda_fp16.h>, <cuda_bf16.h> and c10's CUDA stream and guard. The launchers that only the files with
inline PTX define become stubs that return cudaErrorNotSupported (their binding functions raise). The result is a torch extension
(module ``edge_quamba_emu``, or ``edge_quamba_emu_asan`` with AddressSanitizer) whose functions are the binding's, on
CPU tensors. ``--asan`` builds need ``LD_PRELOAD=$(gcc -print-file-name=libasan.so)`` when imported (check_mamba2.py
sets it). A build takes ~3 minutes on 2 cores; the build folder caches it by torch's rules.
"""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
LAUNCHER = re.compile(r"cudaError_t (launch_\w+)\(const (\w+)& \w+, cudaStream_t \w+\);")
# the launchers a kernel family declares for its own files (int4_common.cuh: namespace w4), any parameters
FAMILY_LAUNCHER = re.compile(r"^cudaError_t (launch_\w+)\(([^;{]*)\);", re.M)
LAUNCH = re.compile(r"([A-Za-z_]\w*(?:<[^<>;]*>)?)<<<(.+?)>>>\((.*?)\);", re.S)
EXTERN_SHARED = re.compile(r"extern __shared__ (\w+) (\w+)\[\];")


def translate(out: Path) -> list[Path]:
    """The emulator's copies of the kernel sources and the binding under ``out``; returns the files to compile."""
    shutil.rmtree(out, ignore_errors=True)
    (out / "kernels").mkdir(parents=True)
    (out / "torch").mkdir()
    kernels = ROOT / "plugins" / "kernels"
    sources, emulated_text, declared = [], "", {}
    for path in sorted(kernels.iterdir()):
        if path.suffix in (".h", ".cuh"):
            (out / "kernels" / path.name).write_text(path.read_text())
            if path.suffix == ".h":  # the public launchers (a .cuh holds a kernel family's internals)
                declared.update({name: (params, path.name) for name, params in LAUNCHER.findall(path.read_text())})
        elif path.suffix == ".cu":
            if has_inline_ptx(path):
                continue
            emulated_text += path.read_text()
            text = LAUNCH.sub(lambda m: f"emu::launch({m.group(2)}, [=]() {{ {m.group(1)}({m.group(3)}); }});",
                              path.read_text())
            text = EXTERN_SHARED.sub(r"\1* \2 = reinterpret_cast<\1*>(emu::dyn_smem());", text)
            if "<<<" in text:
                raise ValueError(f"{path.name}: a kernel launch the translation does not recognize")
            target = out / "kernels" / f"{path.stem}.cpp"
            target.write_text(text)
            sources.append(target)
    stubs = {name: v for name, v in declared.items() if not re.search(rf"{name}\(const \w+& \w+, cudaStream_t \w+\) {{",
                                                                        emulated_text)}
    # a family header's own launchers (e.g. w4::launch_gemm) whose file was left out: stubs in the namespace w4
    family = {path: [(name, args) for name, args in FAMILY_LAUNCHER.findall(path.read_text())
                     if not re.search(rf"cudaError_t {name}\([^;{{]*\) {{", emulated_text)]
              for path in sorted(kernels.glob("*.cuh")) if "namespace w4 {" in path.read_text()}
    if stubs or any(family.values()):
        headers = {h for _, h in stubs.values()} | {path.name for path, found in family.items() if found}
        lines = [f'#include "{header}"' for header in sorted(headers)]
        lines += ["namespace edge_quamba {", "namespace kernels {"]
        lines += [f"cudaError_t {name}(const {params}&, cudaStream_t) {{ return cudaErrorNotSupported; }}"
                  for name, (params, _) in sorted(stubs.items())]
        lines += ["namespace w4 {"]
        lines += [f"cudaError_t {name}({args}) {{ return cudaErrorNotSupported; }}"
                  for found in family.values() for name, args in found]
        lines += ["}  // namespace w4", "}  // namespace kernels", "}  // namespace edge_quamba", ""]
        (out / "kernels" / "not_emulated.cpp").write_text("\n".join(lines))
        sources.append(out / "kernels" / "not_emulated.cpp")
    binding = out / "torch" / "binding.cpp"
    binding.write_text((ROOT / "plugins" / "torch" / "binding.cpp").read_text().replace(".is_cuda()", ".is_cpu()"))
    return [binding, *sources]


def has_inline_ptx(path: Path) -> bool:
    """Whether a kernel file or a local header it includes holds inline PTX, which a CPU cannot run."""
    text = path.read_text()
    for header in re.findall(r'#include "([\w.]+)"', text):
        if (path.parent / header).is_file():
            text += (path.parent / header).read_text()
    return re.search(r"\basm\b", text) is not None


def build(asan: bool = False, build_dir: Path | None = None, verbose: bool = False) -> ModuleType:
    """Translate, compile (or load the cached build) and import the emulated binding."""
    from torch.utils.cpp_extension import load

    name = "edge_quamba_emu_asan" if asan else "edge_quamba_emu"
    folder = Path(build_dir) if build_dir is not None else Path.home() / ".cache" / "edge_quamba" / name
    sources = translate(folder / "src")
    flags = ["-O1", "-g", "-std=c++20", "-ffp-contract=off", "-fno-fast-math"]
    if asan:
        flags += ["-fsanitize=address", "-fno-omit-frame-pointer"]
    return load(name=name, sources=[str(s) for s in sources], extra_include_paths=[str(HERE / "include")],
                extra_cflags=flags, extra_ldflags=["-fsanitize=address"] if asan else [],
                build_directory=str(folder), verbose=verbose)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--asan", action="store_true", help="with AddressSanitizer")
    parser.add_argument("--build-dir", default=None, help="default: ~/.cache/edge_quamba/edge_quamba_emu[_asan]")
    args = parser.parse_args()
    module = build(args.asan, args.build_dir, verbose=True)
    print(f"built {module.__file__}")


if __name__ == "__main__":
    main()
