"""GPU latency at the public Mamba1 shapes, random weights: edge-quamba ``--backend cuda`` (int8 W8A8, CUDA-graph
decode) side by side with mamba_ssm fp16 + CUDA graphs and transformers MambaForCausalLM fp16, in the same run on the
same GPU. Batch 1, a 512-token prompt, 128 new tokens (defaults).

Shapes (d_state 16, expand 2, d_conv 4, vocab 50280, tied embeddings, RMSNorm, residual in fp32):
    130m: d_model 768, 24 layers     370m: 1024, 48     1.4b: 2048, 48     2.8b: 2560, 64

Weights are RANDOM (seeded): speed does not depend on the values, only on shapes and dtypes (no kernel here branches on
data). The edge-quamba model is built directly as a quantized model: random int8 weights, the float32 mixer tensors
(A = -(1..n), D = 1, dt_bias, conv bias), fp16 embeddings and synthetic static scales (:data:`SYNTHETIC_AMAX`), loaded
through ``load_state_dict`` like an artifact; it equals what quantizing random fp weights with synthetic amaxes
gives, without spending minutes on the host. The baselines are built with their own random init, in fp16.

Rows, per shape:
    edge-quamba cuda   the cuda backend (W8A8), timed through the generation protocol of ``edge-quamba bench``
                       (``edge_quamba.runtime.bench.time_once``: prefill, then per token one decode and the greedy
                       token read back by the host, which is what streaming needs), in two ways on the same backend
                       (``--token-choice``, default both):
                       device: greedy on the GPU inside the decode graph (the argmax writes the next step's token
                         buffer; the id goes to pinned host memory asynchronously; the host enqueues step t + 1
                         before it reads token t): ``generate``'s path for greedy decoding on --backend cuda.
                       host (row name + " host-argmax"; the path of every record before step S1): per token the host
                         writes the token, replays the logits graph, clones the logits, takes their argmax and waits
                         for it before the next step.
                       ``graph_ms``: one replay of that row's decode graph alone (back-to-back replays between CUDA
                       events, no host round trip per token): the floor the streaming loop approaches.
                       ``host_ms_per_token`` = tpot_ms - graph_ms: the host time per token the GPU waits for (outside
                       the graph: the token write, the launches, the read-back); issue 20's target is <= 3% of TPOT
                       (``host_fraction_of_tpot``).
    edge-quamba cuda w4a8 / w4a16 (``--impls edge-quamba-w4a8,edge-quamba-w4a16``): the same backend and timing on a
                       random 4-bit model (``--bits w4a8 / w4a16`` layout, groups of 64: random packed codes, group
                       scales sqrt(3 / K) / 7, unit gain: :func:`int4_group_amax`); W4A16 is the float16 fp model
                       with 4-bit linears, so its norm, conv, scan and gate are the float16 reference's torch ops
                       (its prefill scan a Python loop over l).
    mamba_ssm fp16     ``MambaLMHeadModel.generate(cg=True, top_k=1)``: prefill eager, decode from its CUDA graph,
                       sampling on the device, no host round trip per token. causal_conv1d is NOT installed (its
                       build did not finish in the time limit), so mamba_ssm runs its PyTorch conv fallback; its
                       selective scan (prefill) is its CUDA kernel, its decode step its Triton selective_state_update.
    transformers fp16  ``MambaForCausalLM.generate`` (greedy, with cache, no CUDA graphs). transformers 5.17 printed
                       that causal_conv1d_fn and causal_conv1d_update fall back to their PyTorch references (not
                       installed); which scan it ran (mamba_ssm's kernel, installed in the same run, or its own
                       PyTorch loop) was not checked.
Baseline TTFT = median time of generate(1 new token); TPOT = (median generate(N) - TTFT) / (N - 1), as
benchmarks/ort_cpu.py does. Every row drops one warm-up run (graph capture, allocator, autotuning) and reports
medians of --repeats runs, with ``torch.cuda.synchronize()`` around each timed call.

Columns: TTFT and TPOT in ms; peak memory = ``torch.cuda.max_memory_allocated`` from the end of model construction to
the end of the row (weights, states, CUDA-graph pools, activations); weight bytes = bytes of weights one decode step
reads (tied embedding table counted once, as lm_head reads it); achieved GB/s = weight bytes / TPOT, against the
device copy bandwidth measured in the same run (``dst.copy_(src)`` of 1 GiB: read + write bytes / time).

    python benchmarks/bench_latency.py --out benchmarks/results            # all four shapes
    python benchmarks/bench_latency.py --shapes 130m,2.8b --repeats 3

Mamba2 (benchmarks/latency_mamba2.py): the shapes m2-130m and m2-2.7b (public Mamba2 shapes, d_state 128, headdim 64)
take the same --impls (edge-quamba at W8A8 / W4A8 / W4A16, mamba_ssm's Mamba2 in fp16 with CUDA graphs):
    python benchmarks/bench_latency.py --shapes m2-130m,m2-2.7b \
        --impls edge-quamba,edge-quamba-w4a8,edge-quamba-w4a16,mamba_ssm

Writes <out>/<name>.json, .csv and .png (default name: latency_h200); the JSON is rewritten after every shape, so an
interrupted run keeps the shapes it finished. What the Mamba1 and Mamba2 rows share (timing helpers, the row's
columns, the outputs): benchmarks/latency_common.py.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from edge_quamba.models.config import MambaConfig
from edge_quamba.models.mamba import MambaLM
from edge_quamba.quant.primitives import scale_from_amax
from edge_quamba.quant.config import DEFAULT_GROUP_SIZE
from edge_quamba.quant.qmodel import QuantConfig, empty_quantized_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
import latency_mamba2  # noqa: E402  (the Mamba2 rows; beside this file)
from latency_common import (FOUR_BIT_IMPLS, IMPLS, TOKEN_CHOICES, bench_mamba_ssm,  # noqa: E402
                            copy_bandwidth_gb_per_s, edge_quamba_rows, environment, free_memory, generate_row,
                            markdown_table, print_table, skipped, timed, weight_bytes_fp16_model, write_outputs)

SHAPES = {"130m": (768, 24), "370m": (1024, 48), "1.4b": (2048, 48), "2.8b": (2560, 64)}
"""name -> (d_model, n_layer) of the public state-spaces/mamba-* checkpoints."""
SHAPE_ORDER = (*SHAPES, *latency_mamba2.SHAPES)
"""How the plot orders the shapes: by architecture and size, not run order."""
SHAPE_NAMES = {**{s: f"Mamba1 {s}" for s in SHAPES}, **{s: f"Mamba2 {s[3:]}" for s in latency_mamba2.SHAPES}}
"""--shapes name -> the README's name of the shape."""
VOCAB = 50277  # the GPT-NeoX tokenizer's size; padded to a multiple of 8: 50280 embedding rows
PADDED_VOCAB = VOCAB + (-VOCAB) % 8
SYNTHETIC_AMAX = {"in_proj_input": 4.0, "xz": 8.0, "u": 4.0, "dbc": 8.0, "dt": 4.0, "out_proj_input": 4.0,
                  "weight": 0.1}
"""Stand-ins for calibrated activation amaxes and weight amaxes (values do not change the speed)."""


def int4_group_amax(in_features: int) -> float:
    """Stand-in amax of every int4 weight group of a linear with ``in_features`` inputs (group scale amax / 7):
    sqrt(3 / K), unit gain. Codes are uniform, so a weight's variance is about amax^2 / 3 and an output's variance
    K * amax^2 / 3 = 1 times its input's. W4A16 runs its activations in float16 without the clamp an int8 scale
    gives: with a fixed amax of 0.1, Mamba-1.4b/2.8b's random activations grew past float16's 65504 and the logits
    were NaN (the H100 run of 2026-12-07, benchmarks/results/latency_quamba2_h100.json). benchmarks/
    random_model_finite.py checks a shape's random model on the CPU reference."""
    return math.sqrt(3.0 / in_features)


def mamba_config(shape: str) -> MambaConfig:
    d_model, n_layer = SHAPES[shape]
    return MambaConfig(d_model=d_model, n_layer=n_layer, vocab_size=PADDED_VOCAB, d_state=16, expand=2, d_conv=4)


def random_quantized_model(config: MambaConfig, seed: int, device: str | torch.device, bits: str = "w8a8") -> MambaLM:
    """A quantized reference model with random weights (see the module docstring), built on ``device``; ``bits``
    picks the layout (QuantConfig.bits, default group size)."""
    with torch.device("meta"):
        model = empty_quantized_model(config, QuantConfig(bits=bits))
    shapes = {k: (v.shape, v.dtype) for k, v in model.state_dict().items()}
    model = model.to_empty(device=device)
    if config.tie_embeddings:
        model.lm_head.weight = model.backbone.embeddings.weight  # to_empty gives the tied pair two tensors
    gen = torch.Generator(device=device).manual_seed(seed)
    state = {key: random_tensor(key, shape, dtype, config, gen, device) for key, (shape, dtype) in shapes.items()}
    model.load_state_dict(state)
    return model.eval()


def random_tensor(key: str, shape, dtype, config: MambaConfig, gen: torch.Generator, device) -> torch.Tensor:
    """One tensor of the random quantized model, by the role its state-dict key names."""
    name = key.rsplit(".", 1)[-1]
    if dtype == torch.int8:
        return torch.randint(-127, 128, shape, dtype=torch.int8, generator=gen, device=device)
    if dtype == torch.uint8:  # packed int4 codes: every byte is two valid codes in [-8, 7]
        return torch.randint(0, 256, shape, dtype=torch.uint8, generator=gen, device=device)
    if name == "weight_scale" and len(shape) == 2:  # int4 group scales (N, G): K = G * group size
        return torch.full(shape, int4_group_amax(shape[1] * DEFAULT_GROUP_SIZE) / 7, dtype=dtype, device=device)
    if name.endswith("scale"):  # 0-dim static scales
        activation = name[: -len("_scale")]
        return scale_from_amax(SYNTHETIC_AMAX.get(activation, SYNTHETIC_AMAX["weight"])).to(device)
    if name == "A":  # S4D-real initialization: A[d, n] = -(n + 1)
        return -torch.arange(1, config.d_state + 1, dtype=dtype, device=device).expand(shape).contiguous()
    if name == "D" or key.endswith("norm.weight") or key.endswith("norm_f.weight"):
        return torch.ones(shape, dtype=dtype, device=device)
    if name == "dt_bias":  # softplus^-1 of dt in [1e-3, 1e-1], as mamba_ssm initializes it
        log_dt = torch.rand(shape, generator=gen, device=device) * math.log(100.0) + math.log(1e-3)
        dt = torch.exp(log_dt)
        return (dt + torch.log(-torch.expm1(-dt))).to(dtype)
    return (torch.randn(shape, generator=gen, device=device) * 0.02).to(dtype)  # embeddings, biases


def bench_edge_quamba(shape, prompt, new_tokens, repeats, seed, copy_bw, profile_kernels, bits="w8a8",
                      impl=IMPLS[0], token_choices=TOKEN_CHOICES, prefill_graphs=True) -> list[dict]:
    from edge_quamba.errors import BackendUnavailableError
    from edge_quamba.runtime.cuda_backend import CudaBackend, require_cuda_kernels

    try:
        require_cuda_kernels()
    except BackendUnavailableError as exc:
        return [skipped(shape, impl, f"unavailable: {exc}")]
    backend = CudaBackend(random_quantized_model(mamba_config(shape), seed, "cuda", bits),
                          prefill_graphs=prefill_graphs)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    rows = edge_quamba_rows(backend, shape, impl, prompt, new_tokens, repeats, copy_bw, profile_kernels,
                            token_choices)
    del backend
    return rows


def bench_transformers(shape, prompt, new_tokens, repeats, seed, copy_bw) -> dict:
    impl = IMPLS[2]
    try:
        import transformers
    except ImportError:
        return skipped(shape, impl, "not installed")
    d_model, n_layer = SHAPES[shape]
    torch.manual_seed(seed)
    config = transformers.MambaConfig(vocab_size=PADDED_VOCAB, hidden_size=d_model, num_hidden_layers=n_layer,
                                      state_size=16, expand=2, conv_kernel=4, pad_token_id=0, eos_token_id=0,
                                      bos_token_id=0)
    with torch.device("cuda"):
        model = transformers.MambaForCausalLM(config)
    model = model.half().eval()
    ids = torch.tensor([prompt], dtype=torch.long, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()

    def generate(n: int) -> float:
        with torch.inference_mode():
            return timed(lambda: model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                                                min_new_tokens=n, do_sample=False, pad_token_id=0))

    result = generate_row(generate, shape, impl, weight_bytes_fp16_model(model), new_tokens, repeats, copy_bw)
    del model
    return result


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default=",".join(SHAPES),
                        help=f"comma-separated, from {', '.join([*SHAPES, *latency_mamba2.SHAPES])}")
    parser.add_argument("--impls", default="edge-quamba,mamba_ssm,transformers",
                        help="comma-separated, from edge-quamba, mamba_ssm, transformers, edge-quamba-w4a8, "
                        "edge-quamba-w4a16")
    parser.add_argument("--prompt-len", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs after one dropped warm-up (medians)")
    parser.add_argument("--transformers-repeats", type=int, default=2,
                        help="repeats for the (slow) transformers rows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-profile", action="store_true", help="skip the per-kernel table of the edge-quamba rows")
    parser.add_argument("--token-choice", choices=(*TOKEN_CHOICES, "both"), default="both",
                        help="edge-quamba rows: greedy token chosen on the GPU inside the decode graph (device), "
                        "by the host after each step (host: the path before step S1), or both on the same backend")
    parser.add_argument("--prefill", choices=("eager", "graphs"), default="graphs",
                        help="edge-quamba rows: prefill in chunk graphs (edge_quamba/runtime/cuda_prefill.py, the "
                        "cuda backend's default; the prompt's graphs are captured before the warm-up run, so TTFT "
                        "excludes the one-time capture) or eagerly from Python, one forward (the path before P1)")
    parser.add_argument("--out", default=None,
                        help="output folder (default: benchmarks/results; with --replot: the JSON's folder)")
    parser.add_argument("--name", default=None,
                        help="output file stem (default: latency_h200; with --replot: the JSON's own stem)")
    parser.add_argument("--replot", metavar="JSON", default=None,
                        help="no measurement: rewrite the CSV, PNG and table of an earlier run's JSON (beside it, "
                        "unless --out / --name say otherwise)")
    parser.add_argument("--markdown", action="store_true",
                        help="with --replot: also print the run as the README's markdown table")
    args = parser.parse_args(argv)
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    impls = [s.strip() for s in args.impls.split(",") if s.strip()]
    known = ("edge-quamba", "mamba_ssm", "transformers", *FOUR_BIT_IMPLS)
    bad = [s for s in shapes if s not in SHAPES and s not in latency_mamba2.SHAPES]
    bad += [i for i in impls if i not in known]
    if bad or not shapes or not impls:
        parser.error(f"unknown or empty --shapes/--impls entries: {bad}")
    if args.prompt_len < 1 or args.new_tokens < 2 or args.repeats < 1 or args.transformers_repeats < 1:
        parser.error("--prompt-len >= 1, --new-tokens >= 2, --repeats >= 1 and --transformers-repeats >= 1")
    args.shapes, args.impls = shapes, impls
    replot = Path(args.replot) if args.replot is not None else None
    if args.out is None:
        args.out = str(replot.parent if replot is not None else Path(__file__).parent / "results")
    if args.name is None:
        args.name = replot.stem if replot is not None else "latency_h200"
    args.token_choices = TOKEN_CHOICES if args.token_choice == "both" else (args.token_choice,)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.replot is not None:
        try:
            report = json.loads(Path(args.replot).read_text())
            if not isinstance(report, dict) or not isinstance(report.get("rows"), list):
                raise ValueError("no list of rows")
        except (OSError, ValueError) as exc:
            sys.exit(f"bench_latency.py: --replot {args.replot} is not a readable record ({type(exc).__name__}: {exc})")
        print_table(report)
        if args.markdown:
            print(markdown_table(report, SHAPE_NAMES))
        for p in write_outputs(report, Path(args.out), args.name, SHAPE_ORDER):
            print(f"wrote {p}")
        return
    if not torch.cuda.is_available():
        sys.exit("bench_latency.py needs an NVIDIA GPU and this machine has none")
    device = torch.device("cuda")
    prompt = torch.randint(0, VOCAB, (args.prompt_len,), generator=torch.Generator().manual_seed(args.seed)).tolist()
    copy_bw = copy_bandwidth_gb_per_s(device)
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]),
        "batch": 1, "prefill": args.prefill, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
        "repeats": args.repeats,
        "transformers_repeats": args.transformers_repeats, "seed": args.seed, "weights": "random (seeded)",
        "environment": environment(), "copy_bandwidth_gb_per_s": copy_bw,
        "notes": [
            "causal_conv1d is not installed: mamba_ssm runs its PyTorch conv fallback; transformers falls back to "
            "PyTorch references of causal_conv1d_fn/causal_conv1d_update (its own message); its scan path was not "
            "checked",
            "edge-quamba tpot_ms: the streaming loop (the host reads each greedy token); token_choice device: the "
            "argmax inside the decode graph, the id read back one step behind; host (' host-argmax' rows): the host "
            "writes each token and waits for each argmax; graph_ms: one decode graph replay alone; "
            "host_ms_per_token = tpot_ms - graph_ms; baselines sample on the device without a host round trip per "
            "token",
        ],
        "rows": [],
    }
    print(f"{report['environment']['gpu']}: copy bandwidth {copy_bw:.0f} GB/s", flush=True)
    out = Path(args.out)
    for shape in args.shapes:
        for impl in args.impls:
            print(f"[{shape}] timing {impl} ...", file=sys.stderr, flush=True)
            start = time.perf_counter()
            if shape in latency_mamba2.SHAPES:
                result = latency_mamba2.bench(shape, impl, prompt, args, copy_bw, VOCAB, PADDED_VOCAB)
            elif impl == "edge-quamba":
                result = bench_edge_quamba(shape, prompt, args.new_tokens, args.repeats, args.seed, copy_bw,
                                           not args.no_profile, token_choices=args.token_choices,
                                           prefill_graphs=args.prefill == "graphs")
            elif impl in FOUR_BIT_IMPLS:
                bits, name = FOUR_BIT_IMPLS[impl]
                result = bench_edge_quamba(shape, prompt, args.new_tokens, args.repeats, args.seed, copy_bw,
                                           not args.no_profile, bits=bits, impl=name, token_choices=args.token_choices,
                                           prefill_graphs=args.prefill == "graphs")
            elif impl == "mamba_ssm":
                result = bench_mamba_ssm(shape, *SHAPES[shape], VOCAB, {"layer": "Mamba1"}, prompt, args.new_tokens,
                                         args.repeats, args.seed, copy_bw)
            else:
                result = bench_transformers(shape, prompt, args.new_tokens, args.transformers_repeats, args.seed,
                                            copy_bw)
            results = result if isinstance(result, list) else [result]  # edge-quamba: a row per token choice
            for result in results:
                result["wall_s"] = (time.perf_counter() - start) / len(results)
                report["rows"].append(result)
                print(json.dumps({k: v for k, v in result.items() if k != "kernels"}), file=sys.stderr, flush=True)
            free_memory()
        paths = write_outputs(report, out, args.name, SHAPE_ORDER)
    print_table(report)
    for r in report["rows"]:
        if isinstance(r.get("kernels"), list):
            print(f"\n[{r['shape']}] {r['impl']} decode step, GPU time per token by kernel (torch.profiler):")
            for k in r["kernels"]:
                print(f"  {k['us_per_token']:9.1f} us  x{k['launches_per_token']:<5.0f} {k['kernel']}")
    for p in paths:
        print(f"wrote {p}")


if __name__ == "__main__":
    main()
