"""`--backend cuda`: one-line errors everywhere it cannot run (CPU tests), and on a GPU (marker ``cuda``): CUDA-graph
decode == teacher-forced prefill, graph replay == eager step, and the backend == the quantized reference."""

import importlib.abc
import sys

import pytest
import torch

import edge_quamba.ops

from edge_quamba.errors import BackendUnavailableError, InputError
from edge_quamba.quant.calibrate import calibrate
from edge_quamba.quant.pipeline import quantize_checkpoint
from edge_quamba.quant.qmodel import QuantConfig, quantize_model
from edge_quamba.runtime import cuda_backend
from edge_quamba.folders import open_model
from edge_quamba.runtime.backends import make_backend, sequence_model
from helpers import TEXT, make_tokenizer, random_hf_model, report, run_cli, save_transformers_layout
from test_quantized_reference import calibration_tokens, fp_model

BINDING = "edge_quamba.ops.cuda_ops"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """(fp checkpoint folder, quantized artifact folder) of a tiny random model with a tokenizer."""
    tokenizer = make_tokenizer(120)
    hf = random_hf_model(seed=21, vocab_size=tokenizer.get_vocab_size(), hidden_size=64, noise=0.05)
    fp = save_transformers_layout(hf, tmp_path_factory.mktemp("fp"), tokenizer)
    calib = fp.parent / "calib.txt"
    calib.write_text(TEXT * 6)
    quantized = quantize_checkpoint(model=str(fp), out=tmp_path_factory.mktemp("q") / "artifact", calib_data=calib,
                                    qconfig=QuantConfig(calib_samples=4, calib_seq_len=64), progress=False)
    return fp, quantized


# ---------------------------------------------------------------- CPU: errors are one line, never a fallback


def test_fp_folder_is_refused_with_the_quantize_command(folders):
    fp, _ = folders
    folder = open_model(str(fp))
    for call in (lambda: make_backend("cuda", folder), lambda: sequence_model("cuda", folder)):
        with pytest.raises(BackendUnavailableError, match=r"fp checkpoint: make one first with `edge-quamba quantize"):
            call()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_no_gpu_is_one_line_error_from_every_command(folders):
    _, quantized = folders
    with pytest.raises(BackendUnavailableError, match="needs an NVIDIA GPU"):
        make_backend("cuda", open_model(str(quantized)))
    for args in (["run", "--prompt", "The quick"], ["bench", "--prompt-len", "4", "--new-tokens", "2"],
                 ["eval", "--data", str(folders[0].parent / "calib.txt"), "--seq-len", "16"]):
        proc = run_cli(*args, "--model", str(quantized), "--backend", "cuda")
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        print(args[0], proc.returncode, proc.stderr)
        assert proc.returncode == 1 and len(lines) == 1
        assert lines[0].startswith("edge-quamba: error: --backend cuda needs an NVIDIA GPU")


@pytest.fixture
def pretend_gpu(monkeypatch):
    """torch.cuda.is_available() -> True, so the checks after it run on this machine; and the binding module not
    imported yet (an earlier test module may have imported it: ``from edge_quamba.ops import cuda_ops`` would then
    find the package attribute without importing)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delattr(edge_quamba.ops, "cuda_ops", raising=False)


def test_missing_binding_is_one_line_error(pretend_gpu, monkeypatch):
    monkeypatch.setitem(sys.modules, BINDING, None)  # `import` of it now raises ModuleNotFoundError
    with pytest.raises(BackendUnavailableError, match="needs the CUDA kernel binding edge_quamba.ops.cuda_ops"):
        cuda_backend.require_cuda_kernels()


class _UnloadableBinding(importlib.abc.MetaPathFinder):
    """The binding module exists but its compiled library does not load (not built on this machine)."""

    def find_spec(self, name, path, target=None):
        if name == BINDING:
            raise OSError("libedge_quamba_cuda.so: cannot open shared object file: No such file or directory\nmore")
        return None


def test_unbuilt_binding_is_one_line_error(pretend_gpu, monkeypatch):
    monkeypatch.delitem(sys.modules, BINDING, raising=False)
    monkeypatch.setattr(sys, "meta_path", [_UnloadableBinding(), *sys.meta_path])
    with pytest.raises(BackendUnavailableError) as info:
        cuda_backend.require_cuda_kernels()
    message = str(info.value)
    print(message)
    assert "not built or do not load (libedge_quamba_cuda.so: cannot open shared object file" in message
    assert "\n" not in message


def stub_binding(monkeypatch, register):
    stub = type(sys)(BINDING)
    stub.register_cuda_kernels = register
    monkeypatch.setitem(sys.modules, BINDING, stub)
    monkeypatch.setattr(sys.modules["edge_quamba.ops"], "cuda_ops", stub, raising=False)


def test_failed_build_error_passes_through(pretend_gpu, monkeypatch):
    def register():
        raise BackendUnavailableError("building the CUDA kernels in /tmp/x failed: nvcc error")

    stub_binding(monkeypatch, register)
    with pytest.raises(BackendUnavailableError, match="^building the CUDA kernels in /tmp/x failed: nvcc error$"):
        cuda_backend.require_cuda_kernels()


def test_every_op_of_the_namespace_needs_a_cuda_kernel(pretend_gpu, monkeypatch):
    stub_binding(monkeypatch, lambda: ())
    ops = cuda_backend.namespace_ops()
    print(ops)
    assert {"edge_quamba::int8_causal_conv1d", "edge_quamba::int8_selective_scan",
            "edge_quamba::hadamard_quantize"} <= set(ops)
    monkeypatch.setattr(cuda_backend, "has_cuda_kernel", lambda qualname: qualname != "edge_quamba::hadamard_quantize")
    with pytest.raises(BackendUnavailableError, match=r"registered for edge_quamba::hadamard_quantize$"):
        cuda_backend.require_cuda_kernels()
    monkeypatch.setattr(cuda_backend, "has_cuda_kernel", lambda qualname: True)
    cuda_backend.require_cuda_kernels()


def test_each_op_has_a_binding_kernel_or_a_refused_option():
    """The binding's op list plus the ops whose models are refused cover the namespace: an op added without either
    makes every `--backend cuda` run fail on a GPU (this is how a Mamba2/int4 merge once broke it)."""
    from edge_quamba.ops import cuda_ops
    from edge_quamba.ops.torch_ops import NO_CUDA_KERNEL

    bound = {f"edge_quamba::{name}" for name in cuda_ops.OP_NAMES}
    uncovered = [op for op in cuda_backend.namespace_ops() if op not in bound and op not in NO_CUDA_KERNEL]
    assert not uncovered
    assert not bound & set(NO_CUDA_KERNEL)


def test_w8a8_four_bit_and_mamba2_models_are_not_refused():
    """Every op a Mamba1 or Mamba2 model calls at W8A8, W4A8 or W4A16 has a CUDA kernel (per-channel weight scales
    are refused: tests/test_quality_options.py)."""
    from edge_quamba.models.config import Mamba2Config, MambaConfig
    from edge_quamba.quant.qmodel import Int4Linear

    class Shell(torch.nn.Module):
        def __init__(self, config, child=None):
            super().__init__()
            self.config, self.child = config, child

    mamba1 = MambaConfig(vocab_size=16, d_model=8, n_layer=1)
    mamba2 = Mamba2Config(vocab_size=16, d_model=64, n_layer=1)
    cuda_backend.refuse_options(Shell(mamba1))  # a W8A8 model calls only ops with kernels
    cuda_backend.refuse_options(Shell(mamba1, Int4Linear(32, 8, False, 32)))  # so does a 4-bit one (W4A8, W4A16)
    cuda_backend.refuse_options(Shell(mamba2))  # and Mamba2 (Quamba2)
    cuda_backend.refuse_options(Shell(mamba2, Int4Linear(32, 8, False, 32)))


def test_has_cuda_kernel_reads_the_dispatcher():
    lib = torch.library.Library("edge_quamba_test_cuda_backend", "FRAGMENT")
    lib.define("twice(Tensor x) -> Tensor")
    lib.impl("twice", lambda x: 2 * x, "CPU")
    assert not cuda_backend.has_cuda_kernel("edge_quamba_test_cuda_backend::twice")
    lib.impl("twice", lambda x: 2 * x, "CUDA")  # registering needs no GPU
    assert cuda_backend.has_cuda_kernel("edge_quamba_test_cuda_backend::twice")
    assert not cuda_backend.has_cuda_kernel("edge_quamba_test_cuda_backend::undefined")


def test_cpu_device_is_refused(pretend_gpu, monkeypatch):
    monkeypatch.setattr(cuda_backend, "require_cuda_kernels", lambda: None)
    with pytest.raises(BackendUnavailableError, match="runs on a CUDA device, not cpu"):
        cuda_backend.CudaBackend(torch.nn.Module(), device="cpu")


def test_gpu_layout_fp16_table_fp32_norms(folders):
    """The layout prepare_gpu_model makes, checked on the CPU (the move itself is a no-op here)."""
    from edge_quamba.folders import load_quantized_model

    model = cuda_backend.prepare_gpu_model(load_quantized_model(folders[1]), torch.device("cpu"))
    assert model.backbone.embeddings.weight.dtype == torch.float16
    assert model.lm_head.weight is model.backbone.embeddings.weight  # tied: one fp16 table
    assert model.backbone.norm_f.weight.dtype == torch.float32
    hidden = torch.randn(3, model.config.d_model)
    assert model.lm_head(hidden).dtype == torch.float32


# ---------------------------------------------------------------- GPU


def quantized_tiny_model(seed=6):
    fp = fp_model(dtype=torch.float32, seed=seed, hidden_size=64, noise=0.05)
    qconfig = QuantConfig(calib_samples=4, calib_seq_len=48)
    return quantize_model(fp, calibrate(fp, calibration_tokens(), qconfig, batch_size=2, progress=False), qconfig)


def teacher_forced(backend, tokens):
    """prefill(first token), then decode every following token -> logits (l, v) on the host."""
    logits, handle = backend.prefill(tokens[:1])
    rows = [logits.float().cpu()]
    for token in tokens[1:]:
        logits, handle = backend.decode(token, handle)
        rows.append(logits.float().cpu())
    return torch.stack(rows)


@pytest.mark.cuda
def test_graph_decode_equals_teacher_forced_prefill():
    backend = cuda_backend.CudaBackend(quantized_tiny_model())
    tokens = torch.randint(0, 120, (40,), generator=torch.Generator().manual_seed(3)).tolist()
    with torch.inference_mode():
        prefill = backend(torch.tensor([tokens]))[0][0].float().cpu()  # (l, v), one eager forward
    stepped = teacher_forced(backend, tokens)
    scale = prefill.abs().max().item()
    diff = report("graph decode vs prefill logits", stepped - prefill)
    print(f"logit scale {scale:.3f}")
    assert diff <= 1e-2 * scale  # prefill and step run different scan kernels: float order differs
    assert torch.equal(stepped.argmax(-1), prefill.argmax(-1))


@pytest.mark.cuda
def test_graph_replay_equals_eager_step():
    """The captured graph computes exactly what the eager step computes (same kernels, states copied back)."""
    graph = cuda_backend.CudaBackend(quantized_tiny_model())
    eager = cuda_backend.CudaBackend(quantized_tiny_model(), graph=False)
    tokens = torch.randint(0, 120, (24,), generator=torch.Generator().manual_seed(4)).tolist()
    a, b = teacher_forced(graph, tokens), teacher_forced(eager, tokens)
    report("graph vs eager decode", a - b)
    assert torch.equal(a, b)
    for sa, sb in zip(graph.states, eager.states):
        assert torch.equal(sa.conv_state, sb.conv_state) and torch.equal(sa.ssm_state, sb.ssm_state)


@pytest.mark.cuda
def test_decode_refuses_states_of_an_earlier_prefill():
    backend = cuda_backend.CudaBackend(quantized_tiny_model())
    _, first = backend.prefill([1, 2, 3])
    backend.prefill([4, 5])
    with pytest.raises(InputError, match="continues only the latest prefill"):
        backend.decode(6, first)


@pytest.mark.cuda
def test_cuda_backend_equals_quantized_reference_on_demo_model(demo_quantized):
    from edge_quamba.models.tokenizer import load_tokenizer
    from edge_quamba.runtime.bench import bench_prompt
    from edge_quamba.runtime.run import run_prompt
    from edge_quamba.runtime.sampling import SamplingConfig

    ref = make_backend("ref", open_model(str(demo_quantized)))
    gpu = make_backend("cuda", open_model(str(demo_quantized)))
    prompt = bench_prompt(load_tokenizer(demo_quantized), 96)
    expected, _ = ref.prefill(prompt)
    got, _ = gpu.prefill(prompt)
    scale = expected.abs().max().item()
    diff = report("cuda vs ref prefill logits (demo model)", got.float().cpu() - expected)
    print(f"logit scale {scale:.3f}")
    assert diff <= 1e-2 * scale
    greedy = SamplingConfig(temperature=0)
    runs = {name: run_prompt(model=str(demo_quantized), prompt="The history of", max_new_tokens=24, sampling=greedy,
                             backend=name) for name in ("ref", "cuda")}
    print({name: r.tokens for name, r in runs.items()})
    assert runs["cuda"].tokens == runs["ref"].tokens
    assert runs["cuda"].text == runs["ref"].text


@pytest.mark.cuda
def test_cli_bench_cuda_reports_gpu_memory(demo_quantized):
    proc = run_cli("bench", "--model", str(demo_quantized), "--backend", "cuda", "--prompt-len", "32",
                   "--new-tokens", "8", "--repeats", "1", "--json")
    print(proc.stdout, proc.stderr)
    assert proc.returncode == 0
    import json

    result = json.loads(proc.stdout)
    assert result["backend"] == "cuda" and result["tpot_ms"] > 0 and result["peak_memory_bytes"] > 0
