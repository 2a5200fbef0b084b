"""ONNX Runtime (CPU) time of the lowered Hadamard + quantize -> out_proj, static vs per-token (dynamic) scale.

    OMP_NUM_THREADS=1 python3 benchmarks/dynscale_ort_cpu.py [--out benchmarks/results/dynscale_ort_cpu.json]

Each graph is what the lowering emits for one mixer's tail (edge_quamba.onnx.graph_builder.GraphBuilder, the function
bodies of edge_quamba.onnx.functions): y (1, l, d_inner) float32 ->
    static:  HadamardQuantize(out_scale) -> DQ -> MatMul(DQ(W)) (ORT fuses it into MatMulIntegerToFloat)
    dynamic: HadamardQuantizeDynamic -> (y_q, y_scale) -> MatMulInteger(uint8 shift) -> Cast -> Mul(per-row scale)
out_proj is d_inner -> d_inner / 2 with random int8 weights; batch 1, one intra-op thread, the median of `--repeats`
runs after warm-up. Also checks each output against the reference ops (bit-identical expected). CPU times on a shared
machine are noisy: compare the two columns of one run, not runs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from edge_quamba.onnx import IR_VERSION, OPSET  # noqa: E402
from edge_quamba.onnx.functions import hadamard_quantize_dynamic_function, hadamard_quantize_function  # noqa: E402
from edge_quamba.onnx.graph_builder import GraphBuilder  # noqa: E402
from edge_quamba.ops import torch_ops  # noqa: E402,F401  (registers torch.ops.edge_quamba)
from edge_quamba.ops.specs import DOMAIN, HADAMARD_QUANTIZE, HADAMARD_QUANTIZE_DYNAMIC  # noqa: E402
from edge_quamba.quant.qmodel import QuantLinear  # noqa: E402
from edge_quamba.runtime.bench import cpu_name  # noqa: E402
from edge_quamba.runtime.ort_backend import import_onnxruntime, session_options  # noqa: E402

D_INNERS = (768, 1536, 5120)
SEQLENS = (1, 512)
OUT_SCALE = 0.02


def tail_graph(mode: str, d_in: int, linear: QuantLinear) -> onnx.ModelProto:
    g = GraphBuilder()
    if mode == "static":
        scale = g.scale("out_proj_input_scale", torch.tensor(OUT_SCALE))
        (y_q,) = g.custom(HADAMARD_QUANTIZE, ["y"], ["y_q"], "hadamard_quantize", out_scale=OUT_SCALE)
        out = g.int8_linear(y_q, scale, linear, "out_proj")
        function = hadamard_quantize_function(d_in)
    else:
        y_q, y_scale = g.custom(HADAMARD_QUANTIZE_DYNAMIC, ["y"], ["y_q", "y_scale"], "hadamard_quantize")
        out = g.int8_linear_per_token(y_q, y_scale, linear, "out_proj")
        function = hadamard_quantize_dynamic_function(d_in)
    graph = helper.make_graph(g.nodes, f"tail_{mode}", [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                                                      ["b", "l", d_in])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["b", "l", d_in // 2])],
                              initializer=g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(DOMAIN, 1)],
                              functions=[function])
    model.ir_version = IR_VERSION
    return model


def reference(mode: str, y: torch.Tensor, linear: QuantLinear) -> np.ndarray:
    eq = torch.ops.edge_quamba
    w_scale = float(linear.weight_scale)
    if mode == "static":
        return eq.int8_linear(eq.hadamard_quantize(y, OUT_SCALE), linear.weight, None, OUT_SCALE, w_scale).numpy()
    y_q, y_scale = eq.hadamard_quantize_dynamic(y)
    return eq.int8_linear_per_token(y_q, linear.weight, None, y_scale, w_scale).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/dynscale_ort_cpu.json"))
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    ort = import_onnxruntime()
    rows = []
    print(f"{'d_inner':>7} {'l':>4} {'static ms':>10} {'dynamic ms':>10} {'ratio':>6}  exact")
    for d_in in D_INNERS:
        g = torch.Generator().manual_seed(d_in)
        linear = QuantLinear.from_weight(torch.randn(d_in // 2, d_in, generator=g), None)
        for l in SEQLENS:
            y = torch.randn(1, l, d_in, generator=g) * torch.exp(torch.randn(d_in, generator=g))
            times, exact = {}, {}
            for mode in ("static", "dynamic"):
                session = ort.InferenceSession(tail_graph(mode, d_in, linear).SerializeToString(),
                                               session_options(threads=1), providers=["CPUExecutionProvider"])
                feed = {"y": y.numpy()}
                (got,) = session.run(None, feed)
                exact[mode] = bool(np.array_equal(got, reference(mode, y, linear)))
                runs = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    session.run(None, feed)
                    runs.append((time.perf_counter() - start) * 1e3)
                times[mode] = statistics.median(runs)
            rows.append(dict(d_inner=d_in, seqlen=l, static_ms=round(times["static"], 4),
                             dynamic_ms=round(times["dynamic"], 4),
                             ratio=round(times["dynamic"] / times["static"], 3), bit_exact=exact))
            print(f"{d_in:>7} {l:>4} {times['static']:>10.3f} {times['dynamic']:>10.3f} "
                  f"{times['dynamic'] / times['static']:>6.2f}  {exact}")
    result = {"command": "OMP_NUM_THREADS=1 python3 benchmarks/dynscale_ort_cpu.py",
              "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
              "cpu": cpu_name(), "onnxruntime": ort.__version__, "threads": 1, "batch": 1,
              "note": "shared 2-core machine: times are noisy; compare static and dynamic within one run",
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
