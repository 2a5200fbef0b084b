"""CI (no GPU): every plugins/kernels/*.cu compiles with this machine's nvcc for Orin (sm_87) and Hopper (sm_90), the
generated H_m tables equal edge_quamba.quant.hadamard's, and a missing GPU is a one-line BackendUnavailableError."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from edge_quamba.errors import BackendUnavailableError

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT / "plugins" / "kernels"
ARCHS = ("87", "90")


def _nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    candidate = Path("/usr/local/cuda/bin/nvcc")
    return str(candidate) if candidate.is_file() else None


@pytest.mark.skipif(_nvcc() is None, reason="nvcc not found on this machine")
def test_every_kernel_compiles_for_sm87_and_sm90(tmp_path):
    sources = sorted(str(p) for p in KERNELS.glob("*.cu"))
    assert len(sources) == 11, sources  # a new kernel file changes this count on purpose
    procs = {}
    for arch in ARCHS:  # one nvcc call per arch, both running at once
        out = tmp_path / f"sm_{arch}"
        out.mkdir()
        cmd = [_nvcc(), "-c", "-O3", "--fmad=false", "-std=c++17", "-Werror", "all-warnings",
               f"-gencode=arch=compute_{arch},code=sm_{arch}", "--output-directory", str(out), *sources]
        procs[arch] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for arch, proc in procs.items():
        log, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"nvcc for sm_{arch} failed:\n{log}"
        objects = sorted(p.name for p in (tmp_path / f"sm_{arch}").glob("*.o"))
        assert len(objects) == len(sources), objects


def test_hadamard_tables_header_is_generated_from_the_reference():
    spec = importlib.util.spec_from_file_location("gen_hadamard_tables", KERNELS / "gen_hadamard_tables.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    text = gen.render()
    assert "kHadamard12[144]" in text and "kHadamard20[400]" in text and "kHadamard28[784]" in text
    assert (KERNELS / "hadamard_tables.h").read_text() == text, \
        "plugins/kernels/hadamard_tables.h is stale: run python3 plugins/kernels/gen_hadamard_tables.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised where there is no GPU")
def test_no_gpu_is_a_one_line_backend_error():
    from edge_quamba.ops import cuda_ops

    with pytest.raises(BackendUnavailableError) as info:
        cuda_ops.register_cuda_kernels()
    message = str(info.value)
    print(message)
    assert "\n" not in message and "GPU" in message


def test_kernel_layer_is_free_of_torch_and_tensorrt():
    for path in KERNELS.iterdir():
        if path.suffix in (".h", ".cuh", ".cu"):
            text = path.read_text()
            for banned in ("#include <torch", "#include <ATen", "#include <c10", "NvInfer", "nvinfer1"):
                assert banned not in text, f"{path.name} uses {banned}"

