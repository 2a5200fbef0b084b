"""Per-kernel GPU time of the int8 kernels at one Mamba layer of the 2.8b shape, decode (l = 1) and prefill (l = 512).

    python3 benchmarks/kernel_timing.py [--out benchmarks/results/kernel_timing.json]

Batch 1; d_model 2560, d_inner 5120, n 16, dt_rank 160, k 4 (random int8 weights and inputs). Each kernel is
called `REPS` times inside one CUDA graph and the graph replayed, so the times are GPU times without Python or
launch overhead (what a CUDA-graph decode pays). Achieved GB/s = bytes the kernel must move (inputs + outputs +
weights, each once) / time, next to the device-to-device copy bandwidth measured in the same run (the larger of
a 256 MiB and a 1 GiB copy). Linear weights cycle through copies totalling > 200 MiB, so they come from HBM, not L2. The linears run
the GEMV kernel at l = 1 and torch._int_mm (cuBLASLt) at l = 512, exactly as the binding dispatches them.

Two chains of one layer (the mixer of edge_quamba.quant.flow plus the RMSNorm before it; no residual add):
  unfused: RMSNorm as torch float32 ops (what Norm.forward runs) -> quantize -> in_proj -> quantize -> conv ->
           x_proj -> quantize -> dt_proj -> quantize -> scan -> hadamard_quantize -> out_proj
  fused:   rms_norm_quantize -> in_proj int8_linear_quantize -> conv -> x_proj int8_linear_quantize ->
           dt_proj int8_linear_quantize -> scan -> hadamard_quantize -> out_proj
Each chain is timed whole, `REPS` layers per CUDA graph (weights cycling as above), next to the sum of its kernels.

4-bit linears (chain "int4", not part of the chains above): w4a8_linear_quantize (in_proj, x_proj, dt_proj),
w4a8_linear (out_proj) and w4a16_linear (the four, float16 in and out) at the same shapes, groups of 64: packed int4
codes + float32 group scales cycling like the int8 weights; bytes = packed weights + scales + x + y. At l = 1 they
run the GEMVs, at l = 512 the tensor-core GEMM (plugins/kernels/int4_linear.h). `--int4-only` times just these.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from edge_quamba.ops.cuda_ops import load_extension  # noqa: E402

SHAPE = dict(d_model=2560, d_inner=5120, d_state=16, dt_rank=160, d_conv=4, n_layer=64)
EPS = 1e-5
REPS, REPLAYS = 50, 20


def graph_time_us(fn, reps: int = REPS) -> float:
    """Mean GPU microseconds of one fn() call, from a CUDA graph of `reps` calls replayed REPLAYS times."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(reps):
            fn()
    graph.replay()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(REPLAYS):
        graph.replay()
    stop.record()
    torch.cuda.synchronize()
    return start.elapsed_time(stop) * 1e3 / (reps * REPLAYS)


def copy_bandwidth_gbs() -> dict[str, float]:
    """Device-to-device copy GB/s (bytes read + bytes written) for 256 MiB and 1 GiB buffers."""
    result = {}
    for mib in (256, 1024):
        a = torch.empty(mib * 2**18, dtype=torch.float32, device="cuda")
        b = torch.empty_like(a)
        us = graph_time_us(lambda: b.copy_(a))
        result[f"{mib}MiB"] = round(2 * a.numel() * 4 / (us * 1e-6) / 1e9, 1)
        del a, b
    return result


def cycling(make, nbytes: int, cold_bytes: int = 200 * 2**20):
    """Enough copies of a weight that cycling through them streams > 200 MiB (4x the H200's 50 MB L2), so each call
    reads its weight from HBM as in a real model's decode; returns a function giving the next copy."""
    copies = [make() for _ in range(max(1, -(-cold_bytes // nbytes)))]
    state = {"i": 0}

    def next_copy():
        state["i"] = (state["i"] + 1) % len(copies)
        return copies[state["i"]]
    next_copy.count = len(copies)
    return next_copy


def layer_kernels(ext, l: int):
    """(name, chain, fn, bytes moved, calls per graph) for each kernel of one layer at sequence length l (batch 1);
    chain: "unfused", "fused" or "both" (which layer chain of the module docstring runs it)."""
    d, di, n, r, k = (SHAPE[x] for x in ("d_model", "d_inner", "d_state", "dt_rank", "d_conv"))

    def i8(*s):
        return torch.randint(-127, 128, s, dtype=torch.int8, device="cuda")

    h = torch.randn(1, l, d, device="cuda")
    norm_w = torch.rand(d, device="cuda") + 0.5
    w_in, w_x, w_dt, w_out = (cycling(lambda shape=shape: i8(*shape), shape[0] * shape[1])
                              for shape in ((2 * di, d), (r + 2 * n, di), (di, r), (d, di)))
    x_q = i8(1, l, d)
    xz_f = torch.randn(1, l, 2 * di, device="cuda")
    xz = i8(1, l, 2 * di)
    conv_state, conv_w, conv_b = i8(1, di, k), i8(di, k), torch.randn(di, device="cuda")
    u = i8(1, l, di)
    xp = i8(1, l, r + 2 * n)
    dt_f, dt = torch.randn(1, l, di, device="cuda"), i8(1, l, di)
    ssm = torch.randn(1, di, n, device="cuda")
    A, D, dt_bias = -torch.rand(di, n, device="cuda"), torch.randn(di, device="cuda"), torch.randn(di, device="cuda")
    y = torch.randn(1, l, di, device="cuda")
    s = 0.02
    return [(name, chain, fn, nbytes, max(REPS, w.count if w else 0)) for name, chain, fn, nbytes, w in [
        ("RMSNorm (torch float32 ops)", "unfused", lambda: rms_norm_torch(h, norm_w), l * d * 8 + d * 4, None),
        ("quantize (norm out)", "unfused", lambda: ext.quantize(h, s), l * d * 5, None),
        ("rms_norm_quantize", "fused", lambda: ext.rms_norm_quantize(h, norm_w, EPS, s), l * d * 5 + d * 4, None),
        ("in_proj int8_linear", "unfused", lambda: ext.int8_linear(x_q, w_in(), None, s, s), 2 * di * d + l * d + l * 2 * di * 4, w_in),
        ("in_proj int8_linear_quantize", "fused", lambda: ext.int8_linear_quantize(x_q, w_in(), None, s, s, s),
         2 * di * d + l * d + l * 2 * di, w_in),
        ("quantize (in_proj out)", "unfused", lambda: ext.quantize(xz_f, s), l * 2 * di * 5, None),
        ("int8_causal_conv1d", "both", lambda: ext.int8_causal_conv1d(xz[..., :di], conv_state, conv_w, conv_b, s, s, s),
         2 * l * di + 3 * di * k + di * 4, None),
        ("x_proj int8_linear", "unfused", lambda: ext.int8_linear(u, w_x(), None, s, s), (r + 2 * n) * di + l * di
         + l * (r + 2 * n) * 4, w_x),
        ("x_proj int8_linear_quantize", "fused", lambda: ext.int8_linear_quantize(u, w_x(), None, s, s, s),
         (r + 2 * n) * di + l * di + l * (r + 2 * n), w_x),
        ("quantize (x_proj out)", "unfused", lambda: ext.quantize(xz_f[..., : r + 2 * n], s), l * (r + 2 * n) * 5, None),
        ("dt_proj int8_linear", "unfused", lambda: ext.int8_linear(xp[..., :r], w_dt(), None, s, s),
         di * r + l * r + l * di * 4, w_dt),
        ("dt_proj int8_linear_quantize", "fused", lambda: ext.int8_linear_quantize(xp[..., :r], w_dt(), None, s, s, s),
         di * r + l * r + l * di, w_dt),
        ("quantize (dt_proj out)", "unfused", lambda: ext.quantize(dt_f, s), l * di * 5, None),
        ("int8_selective_scan", "both", lambda: ext.int8_selective_scan(u, dt, xp[..., r:r + n], xp[..., r + n:],
                                                                xz[..., di:], ssm, A, D, dt_bias, s, s, s, s, s),
         3 * l * di + 2 * l * n + 2 * di * n * 4 + di * n * 4 + 2 * di * 4 + l * di * 4, None),
        ("hadamard_quantize", "both", lambda: ext.hadamard_quantize(y, s), l * di * 5, None),
        ("out_proj int8_linear", "both", lambda: ext.int8_linear(u, w_out(), None, s, s),
         d * di + l * di + l * d * 4, w_out),
    ]]


GROUP = 64


def int4_kernels(ext, l: int):
    """(name, "int4", fn, bytes moved, calls per graph) for the 4-bit linears of one layer at sequence length l."""
    d, di, n, r = (SHAPE[x] for x in ("d_model", "d_inner", "d_state", "dt_rank"))
    s = 0.02

    def weight(out_features, in_features):
        groups = -(-in_features // GROUP)
        nbytes = out_features * (in_features // 2) + out_features * groups * 4

        def make():
            return (torch.randint(0, 256, (out_features, in_features // 2), dtype=torch.uint8, device="cuda"),
                    torch.full((out_features, groups), 0.1 / 7, device="cuda"))
        return cycling(make, nbytes), nbytes

    rows = []
    for name, (k, n_out), quantize in (("in_proj", (d, 2 * di), True), ("x_proj", (di, r + 2 * n), True),
                                       ("dt_proj", (r, di), True), ("out_proj", (di, d), False)):
        w, wbytes = weight(n_out, k)
        x_q = torch.randint(-127, 128, (1, l, k), dtype=torch.int8, device="cuda")
        x16 = (torch.randn(1, l, k, device="cuda") * 0.1).half()
        if quantize:
            a8 = (lambda x_q=x_q, w=w: ext.w4a8_linear_quantize(x_q, *w(), None, s, GROUP, s))
            rows.append((f"{name} w4a8_linear_quantize", "int4", a8, wbytes + l * k + l * n_out, w.count))
        else:
            a8 = (lambda x_q=x_q, w=w: ext.w4a8_linear(x_q, *w(), None, s, GROUP))
            rows.append((f"{name} w4a8_linear", "int4", a8, wbytes + l * k + 4 * l * n_out, w.count))
        a16 = (lambda x16=x16, w=w: ext.w4a16_linear(x16, *w(), None, GROUP))
        rows.append((f"{name} w4a16_linear", "int4", a16, wbytes + 2 * l * k + 2 * l * n_out, w.count))
    return [(name, chain, fn, nbytes, max(REPS, count)) for name, chain, fn, nbytes, count in rows]


def rms_norm_torch(h, weight):
    """Norm.forward's RMSNorm in float32 torch ops (pow, mean, add, rsqrt, mul, mul)."""
    return weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + EPS))


def layer_chains(ext, l: int):
    """{"unfused": fn, "fused": fn}: one whole layer each (batch 1, sequence length l), weights cycling per call."""
    d, di, n, r, k = (SHAPE[x] for x in ("d_model", "d_inner", "d_state", "dt_rank", "d_conv"))

    def i8(*s):
        return torch.randint(-127, 128, s, dtype=torch.int8, device="cuda")

    per_layer = 2 * di * d + (r + 2 * n) * di + di * r + d * di
    weights = cycling(lambda: (i8(2 * di, d), i8(r + 2 * n, di), i8(di, r), i8(d, di)), per_layer)
    h, norm_w = torch.randn(1, l, d, device="cuda"), torch.rand(d, device="cuda") + 0.5
    conv_state, conv_w, conv_b = i8(1, di, k), i8(di, k), torch.randn(di, device="cuda")
    ssm = torch.randn(1, di, n, device="cuda")
    A, D, dt_bias = -torch.rand(di, n, device="cuda"), torch.randn(di, device="cuda"), torch.randn(di, device="cuda")
    s = 0.02

    def tail(xz, u, xp, dt, w_out):
        y, _ = ext.int8_selective_scan(u, dt, xp[..., r:r + n], xp[..., r + n:], xz[..., di:], ssm, A, D, dt_bias,
                                       s, s, s, s, s)
        return ext.int8_linear(ext.hadamard_quantize(y, s), w_out, None, s, s)

    def unfused():
        w_in, w_x, w_dt, w_out = weights()
        x_q = ext.quantize(rms_norm_torch(h, norm_w), s)
        xz = ext.quantize(ext.int8_linear(x_q, w_in, None, s, s), s)
        u, _ = ext.int8_causal_conv1d(xz[..., :di], conv_state, conv_w, conv_b, s, s, s)
        xp = ext.quantize(ext.int8_linear(u, w_x, None, s, s), s)
        dt = ext.quantize(ext.int8_linear(xp[..., :r], w_dt, None, s, s), s)
        return tail(xz, u, xp, dt, w_out)

    def fused():
        w_in, w_x, w_dt, w_out = weights()
        x_q = ext.rms_norm_quantize(h, norm_w, EPS, s)
        xz = ext.int8_linear_quantize(x_q, w_in, None, s, s, s)
        u, _ = ext.int8_causal_conv1d(xz[..., :di], conv_state, conv_w, conv_b, s, s, s)
        xp = ext.int8_linear_quantize(u, w_x, None, s, s, s)
        dt = ext.int8_linear_quantize(xp[..., :r], w_dt, None, s, s, s)
        return tail(xz, u, xp, dt, w_out)

    return {"unfused": unfused, "fused": fused}, max(REPS, weights.count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/kernel_timing.json"))
    parser.add_argument("--int4-only", action="store_true",
                        help="time only the 4-bit linears (no int8 rows, no chains)")
    parser.add_argument("--profile-once", action="store_true",
                        help="call each selected kernel once, eagerly, and exit without timing (run it under ncu)")
    args = parser.parse_args()
    ext = load_extension()

    def selected(l: int):
        return int4_kernels(ext, l) if args.int4_only else layer_kernels(ext, l) + int4_kernels(ext, l)

    if args.profile_once:
        for l in (1, 512):
            for _name, _chain, fn, _nbytes, _reps in selected(l):
                fn()
        torch.cuda.synchronize()
        return
    copies = copy_bandwidth_gbs()
    copy = max(copies.values())
    rows, layers = [], []
    for l in (1, 512):
        for name, chain, fn, nbytes, reps in selected(l):
            us = graph_time_us(fn, reps)
            gbs = nbytes / (us * 1e-6) / 1e9
            rows.append(dict(kernel=name, chain=chain, seqlen=l, time_us=round(us, 3), bytes=nbytes,
                             gb_per_s=round(gbs, 1), fraction_of_copy=round(gbs / copy, 3)))
        if args.int4_only:
            continue
        chains, reps = layer_chains(ext, l)
        for chain, fn in chains.items():
            kernels_us = sum(r["time_us"] for r in rows if r["seqlen"] == l and r["chain"] in (chain, "both"))
            us = graph_time_us(fn, reps)
            layers.append(dict(chain=chain, seqlen=l, layer_us=round(us, 2), sum_of_kernels_us=round(kernels_us, 2),
                               model_ms=round(us * SHAPE["n_layer"] / 1e3, 3)))
    gpu = torch.cuda.get_device_name()
    print(f"GPU {gpu}, torch {torch.__version__}, batch 1, shape {SHAPE}; device copy {copies} GB/s (read + write)")
    print(f"{'kernel':30s} {'chain':8s} {'l':>4s} {'us':>9s} {'MB':>9s} {'GB/s':>8s} {'of copy':>8s}")
    for r in rows:
        print(f"{r['kernel']:30s} {r['chain']:8s} {r['seqlen']:4d} {r['time_us']:9.2f} {r['bytes'] / 1e6:9.3f} "
              f"{r['gb_per_s']:8.0f} {r['fraction_of_copy']:8.2f}")
    for x in layers:
        print(f"l={x['seqlen']} {x['chain']:7s} layer in one CUDA graph: {x['layer_us']:.1f} us (sum of its kernels "
              f"{x['sum_of_kernels_us']:.1f} us), x {SHAPE['n_layer']} layers = {x['model_ms']:.3f} ms "
              f"(no residual add, embedding, lm_head)")
    result = dict(command=" ".join(["python3 benchmarks/kernel_timing.py", *sys.argv[1:]]), gpu=gpu,
                  torch=torch.__version__,
                  date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), batch=1,
                  shape=SHAPE, graph_reps=REPS, graph_replays=REPLAYS, copy_gb_per_s=round(copy, 1), copy_by_size=copies,
                  kernels=rows, layers=layers)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(args.out)


if __name__ == "__main__":
    main()
