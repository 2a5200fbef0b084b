#!/usr/bin/env bash
# Issues 19 and 20's remaining GPU work in one device call (bounded at ~360 s; run from the repository root):
#   - in the background from the start: the mamba_ssm baseline's build (build_mamba_ssm.sh, .sdists carried) and our
#     torch extension's build (so the latency job finds both ready)
#   - in the background once the extension is built: the greedy-on-the-GPU tests and the cuda backend's tests
#     (pytest -m cuda tests/test_device_greedy.py tests/test_cuda_backend.py, timeout 150 s, beside the harnesses:
#     correctness only, nothing timed runs then)
#   - harness: the TensorRT plugins' harness over every case set, Mamba2 cases included (run_on_gpu.sh, DEADLINE 120)
#   - trtw4: the 4-bit plugins' harness (trt_w4_plugins.sh, DEADLINE 100)
#   - latency: bench_latency.py, Mamba2 2.7b and Mamba1 2.8b (issue 19), then 130m, 370m, 1.4b (issue 20's table) and
#     Mamba2 130m, each at W8A8 / W4A8 / W4A16 beside mamba_ssm fp16 with CUDA graphs, all on this GPU, once the
#     background jobs are done (the harnesses run before it: bundle.sh runs its jobs one after another); our rows
#     twice: tokens chosen on the GPU (as mamba_ssm's are) and on the host (the earlier records' method), the
#     before/after of issue 20's first step (timeout LATENCY_S, default 260 s; each row is printed as a JSON line as it
#     finishes, the JSON/CSV rewritten after each shape, so a cut-off run keeps its finished shapes; SHAPES overrides
#     the list)
# LATENCY=0 (default 1) skips the mamba_ssm build and the latency job (~230 s then; ~500 s with it); HARNESS_S, W4_S, TESTS_S override
# the harness deadlines and the cuda tests' timeout, SANITIZERS=0 skips the harness's compute-sanitizer stages.
# Carry: third_party/tensorrt-10.3, third_party/tensorrt-main, .sdists. Everything comes back in $OUT/bundle.tgz.
set -u
OUT=${OUT:-gpu-out}
export PYTHONPATH=$PWD EDGE_QUAMBA_CUDA_BUILD_DIR=$PWD/build/eq_cuda_ext  # one extension build for all jobs
rm -f /tmp/ms.done /tmp/ext.done /tmp/tests.done
mkdir -p /tmp/bundle
LATENCY=${LATENCY:-1}
[ "$LATENCY" = 1 ] && ( bash benchmarks/gpu/build_mamba_ssm.sh > /tmp/bundle/build_mamba_ssm.log 2>&1; echo "rc $?" >> /tmp/bundle/build_mamba_ssm.log
  touch /tmp/ms.done ) &
( python3 -c \
    "from edge_quamba.ops.cuda_ops import load_extension; load_extension()" > /tmp/bundle/extension_build.log 2>&1
  echo "rc $?" >> /tmp/bundle/extension_build.log; touch /tmp/ext.done
  timeout ${TESTS_S:-150} python3 -m pytest -q -rs -m cuda tests/test_device_greedy.py tests/test_cuda_backend.py \
    > /tmp/bundle/cuda_tests.log 2>&1; echo "rc $?" >> /tmp/bundle/cuda_tests.log; touch /tmp/tests.done ) &
calls=("harness=DEADLINE=${HARNESS_S:-120} SANITIZERS=${SANITIZERS:-1} bash plugins/tensorrt/tests/run_on_gpu.sh"
       "trtw4=DEADLINE=${W4_S:-100} bash benchmarks/gpu/trt_w4_plugins.sh")
[ "$LATENCY" = 1 ] && calls+=("latency=until [ -f /tmp/ms.done ] && [ -f /tmp/tests.done ]; do sleep 2; done; timeout ${LATENCY_S:-260} python3 benchmarks/bench_latency.py --shapes ${SHAPES:-m2-2.7b,2.8b,130m,370m,1.4b,m2-130m} --repeats 2 --impls edge-quamba,edge-quamba-w4a8,edge-quamba-w4a16,mamba_ssm --out \$OUT --token-choice both --name latency_quamba2")
OUT=$OUT bash benchmarks/gpu/bundle.sh "${calls[@]}"
until [ -f /tmp/tests.done ]; do sleep 2; done
tar czf "$OUT/bundle.tgz" -C /tmp bundle
