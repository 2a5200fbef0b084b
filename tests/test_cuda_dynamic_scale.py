"""The per-token out_proj input scale on the GPU (marker cuda): the Hadamard kernel with its amax reduction and the
GEMV / _int_mm epilogue with a per-row scale against the reference on identical inputs (codes, scales and float
outputs bit-exact), the registered ops, and ``--backend cuda`` running a model quantized with
``out_proj_scale="dynamic"`` (graph decode == prefill; every code == the quantized reference's but at followed ties
on the demo model, static and dynamic)."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from edge_quamba.onnx.validate import TieFollower
from edge_quamba.quant import primitives, qops
from edge_quamba.quant.calibrate import calibrate
from edge_quamba.quant.primitives import int8_linear_per_token, quantize_hook
from edge_quamba.quant.qmodel import QuantConfig, quantize_model
from test_cuda_kernels import gen, poison, rand_i8, report
from test_quantized_reference import calibration_tokens, fp_model

pytestmark = pytest.mark.cuda


class CodeRecorder(TorchDispatchMode):
    """The int8 codes each labelled ``edge_quamba`` op makes (label: :func:`primitives.code_label`, set by the
    quantized model around every op that makes codes), copied to the host: {label: codes}."""

    def __init__(self):
        super().__init__()
        self.codes: dict[str, torch.Tensor] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        label = primitives._CODE_LABEL.get()
        first = out[0] if isinstance(out, (tuple, list)) else out
        if func.namespace == "edge_quamba" and label is not None and first.dtype == torch.int8:
            if label in self.codes:
                raise AssertionError(f"{label} made twice in one run")
            self.codes[label] = first.detach().cpu()
        return out


def prefill_following_ties(other, reference, prompt):
    """Prefill ``prompt`` on ``other`` (a backend) recording its codes, then on ``reference`` taking other's code
    wherever the two differ at a proven .5 tie (:class:`edge_quamba.onnx.validate.TieFollower`, the export
    validation's rule). Returns (other's logits, the reference's logits, the follower): after one tie flip a recurrent
    model's logits part by up to ~1, which a plain comparison cannot tell from a bug."""
    recorder = CodeRecorder()
    with torch.inference_mode(), recorder:
        got, _ = other.prefill(prompt)
    follower = TieFollower()
    follower.expect({label: codes.numpy() for label, codes in recorder.codes.items()})
    with torch.inference_mode(), quantize_hook(follower):
        expected, _ = reference.prefill(prompt)
    follower.finish()
    print(f"{follower.codes_compared} codes compared, {follower.ties} ties followed (max "
          f"{follower.max_tie_distance:.1e} codes from .5), {follower.other_differences} other differences")
    return got.float().cpu(), expected, follower


@pytest.fixture(scope="module")
def ext():
    from edge_quamba.ops import cuda_ops

    return cuda_ops.load_extension()


def uneven(g: torch.Generator, *shape: int) -> torch.Tensor:
    *lead, d = shape
    return torch.randn(*shape, generator=g) * torch.exp(torch.randn(d, generator=g)) * \
        torch.exp(2 * torch.randn(*lead, 1, generator=g))


# the kernel's three paths: m = 1 in registers (n <= 256 E), m = 1 across warps (n >= 512 E), m > 1 (a second
# shared buffer): every size of the static kernel's test
@pytest.mark.parametrize("n", [1, 2, 4, 8, 12, 16, 20, 28, 48, 56, 320, 512, 768, 1536, 2048, 3072, 4096, 5120, 7168,
                               8192, 10240, 12288, 14336, 16384])
@pytest.mark.parametrize("rows", [(1, 1), (2, 37)])
def test_hadamard_quantize_dynamic_exact(ext, n, rows):
    g = gen(n * 17 + rows[1])
    y = uneven(g, *rows, n)
    y[0, 0, : min(3, n)] = torch.tensor([30.0, -30.0, 1e-3])[: min(3, n)]
    if rows[1] > 1:
        y[1, 3] = 0.0  # an all-zero token: the floor
    poison(((*rows, n), torch.int8), (rows, torch.float32))
    got_q, got_scale = (t.cpu() for t in ext.hadamard_quantize_dynamic(y.cuda()))
    ref_q, ref_scale = qops.hadamard_quantize_dynamic(y)
    report(f"hadamard_quantize_dynamic n={n} rows={rows} scale", got_scale, ref_scale)
    assert not (got_q == -128).any() and not torch.isnan(got_scale).any(), "unwritten outputs"
    assert torch.equal(got_scale, ref_scale)
    assert torch.equal(got_q, ref_q)


@pytest.mark.parametrize("n,extra", [(5120, 64), (5120, 1), (1536, 3)])
def test_hadamard_quantize_dynamic_row_strided_view(ext, n, extra):
    y = uneven(gen(n + extra), 3, 5, n + extra)[..., :n]
    got_q, got_scale = (t.cpu() for t in ext.hadamard_quantize_dynamic(y.cuda()))
    ref_q, ref_scale = qops.hadamard_quantize_dynamic(y)
    assert torch.equal(got_scale, ref_scale) and torch.equal(got_q, ref_q)


# out_proj of the demo model (K 1536 -> 768) and of 2.8b (5120 -> 2560): decode GEMV, its largest M, prefill _int_mm
@pytest.mark.parametrize("M", [1, 3, 16, 17, 512])
@pytest.mark.parametrize("K,N,use_bias", [(1536, 768, False), (5120, 2560, True), (100, 33, True)])
def test_int8_linear_per_token_exact(ext, M, K, N, use_bias):
    g = gen(M * 31 + K + N)
    x_q = rand_i8(M, K, g=g)
    w_q = rand_i8(N, K, g=g)
    bias = torch.randn(N, generator=g) if use_bias else None
    x_scale = torch.rand(M, generator=g) * 0.05 + 1e-4
    poison(((M, N), torch.float32))
    got = ext.int8_linear_per_token(x_q.cuda(), w_q.cuda(), None if bias is None else bias.cuda(), x_scale.cuda(),
                                    0.00291).cpu()
    ref = int8_linear_per_token(x_q, x_scale, w_q, 0.00291)
    if bias is not None:
        ref = ref + bias
    report(f"int8_linear_per_token M={M} K={K} N={N}", got, ref)
    assert not torch.isnan(got).any(), "unwritten outputs"
    assert torch.equal(got, ref)


def test_registered_ops_dispatch_and_chain(ext):
    """torch.ops.edge_quamba on CUDA tensors runs the kernels; the chain Hadamard -> out_proj == the reference."""
    from edge_quamba.ops import cuda_ops

    assert {"hadamard_quantize_dynamic", "int8_linear_per_token"} <= set(cuda_ops.register_cuda_kernels())
    ops = torch.ops.edge_quamba
    g = gen(11)
    y = uneven(g, 2, 9, 1536)
    w_q = rand_i8(768, 1536, g=g)
    y_q, y_scale = ops.hadamard_quantize_dynamic(y.cuda())
    assert y_q.is_cuda and y_scale.shape == (2, 9)
    out = ops.int8_linear_per_token(y_q, w_q.cuda(), None, y_scale, 0.003).cpu()
    ref_q, ref_scale = ops.hadamard_quantize_dynamic(y)
    assert torch.equal(out, ops.int8_linear_per_token(ref_q, w_q, None, ref_scale, 0.003))


def dynamic_tiny_model(seed=6):
    fp = fp_model(dtype=torch.float32, seed=seed, hidden_size=64, noise=0.05)
    qconfig = QuantConfig(calib_samples=4, calib_seq_len=48, out_proj_scale="dynamic")
    return quantize_model(fp, calibrate(fp, calibration_tokens(), qconfig, batch_size=2, progress=False), qconfig)


def test_cuda_backend_graph_decode_runs_the_dynamic_model():
    from edge_quamba.runtime import cuda_backend
    from test_cuda_backend import teacher_forced

    backend = cuda_backend.CudaBackend(dynamic_tiny_model())
    tokens = torch.randint(0, 120, (40,), generator=torch.Generator().manual_seed(3)).tolist()
    with torch.inference_mode():
        prefill = backend(torch.tensor([tokens]))[0][0].float().cpu()
    stepped = teacher_forced(backend, tokens)
    scale = prefill.abs().max().item()
    diff = report("dynamic: graph decode vs prefill logits", stepped, prefill).max().item()
    assert diff <= 1e-2 * scale
    assert torch.equal(stepped.argmax(-1), prefill.argmax(-1))


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_cuda_backend_equals_reference_on_the_demo_model(tmp_path, mode):
    """Every code the GPU model makes equals the reference's but at proven ties (then followed), and the prefill
    logits agree within the float16 lm_head's error. The static twin in test_cuda_backend.py compares logits without
    following ties; with a per-token scale one last-bit difference of a token's largest value shifts every code of
    the token, so ties flip ~9x more often (README) and the first run of this test without the tie rule failed on
    one (max |diff| 0.249, benchmarks/results/dynscale_cuda_tests_h200.txt)."""
    from edge_quamba.models.tokenizer import load_tokenizer
    from edge_quamba.quant.pipeline import quantize_checkpoint
    from edge_quamba.folders import load_reference_model, open_model
    from edge_quamba.runtime.backends import make_backend
    from edge_quamba.runtime.cuda_backend import CudaBackend
    from edge_quamba.runtime.bench import bench_prompt
    from edge_quamba.runtime.run import run_prompt
    from edge_quamba.runtime.sampling import SamplingConfig

    folder = quantize_checkpoint(model=None, out=tmp_path / "q", progress=False,
                                 qconfig=QuantConfig(calib_samples=8, calib_seq_len=128, out_proj_scale=mode))
    ref = make_backend("ref", open_model(str(folder)))
    # one eager forward: the recorder takes each code tensor of one prefill (chunked prefill, the backend's default,
    # makes each label once per chunk)
    gpu = CudaBackend(load_reference_model(open_model(str(folder))), prefill_graphs=False)
    prompt = bench_prompt(load_tokenizer(folder), 96)
    got, expected, follower = prefill_following_ties(gpu, ref, prompt)
    assert follower.other_differences == 0, f"codes differ away from ties, first at {follower.first_other}"
    diff = report(f"{mode}: cuda vs ref prefill logits, ties followed (demo model)", got, expected).max().item()
    assert diff <= 1e-2 * expected.abs().max().item()
    greedy = SamplingConfig(temperature=0)
    runs = {name: run_prompt(model=str(folder), prompt="The history of", max_new_tokens=24, sampling=greedy,
                             backend=name) for name in ("ref", "cuda")}
    print({name: r.tokens for name, r in runs.items()})
    assert len(runs["cuda"].tokens) == 24
    assert runs["cuda"].tokens[:8] == runs["ref"].tokens[:8]  # later tokens may part after a tie flip in decode
