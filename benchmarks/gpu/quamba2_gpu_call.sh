#!/usr/bin/env bash
# Issue 19's remaining GPU work in one device call (bounded at ~550 s; run from the repository root):
#   - in the background from the start: the mamba_ssm baseline's build (build_mamba_ssm.sh, .sdists carried) and our
#     torch extension's build (so the latency job finds both ready)
#   - harness: the TensorRT plugins' harness over every case set, Mamba2 cases included (run_on_gpu.sh, DEADLINE 190)
#   - trtw4: the 4-bit plugins' harness (trt_w4_plugins.sh, DEADLINE 160)
#   - latency: bench_latency.py, Mamba2 2.7b, Mamba1 2.8b and Mamba2 130m at W8A8 / W4A8 / W4A16 beside mamba_ssm fp16
#     with CUDA graphs, all on this GPU (our tokens chosen on the GPU, as mamba_ssm's are; timeout 190 s; each row is printed as a JSON line as it finishes)
# Carry: third_party/tensorrt-10.3, third_party/tensorrt-main, .sdists. Everything comes back in $OUT/bundle.tgz.
set -u
OUT=${OUT:-gpu-out}
export PYTHONPATH=$PWD
rm -f /tmp/ms.done /tmp/ext.done
mkdir -p /tmp/bundle
( bash benchmarks/gpu/build_mamba_ssm.sh > /tmp/bundle/build_mamba_ssm.log 2>&1; echo "rc $?" >> /tmp/bundle/build_mamba_ssm.log
  touch /tmp/ms.done ) &
( EDGE_QUAMBA_CUDA_BUILD_DIR=$PWD/build/eq_cuda_ext python3 -c \
    "from edge_quamba.ops.cuda_ops import load_extension; load_extension()" > /tmp/bundle/extension_build.log 2>&1
  echo "rc $?" >> /tmp/bundle/extension_build.log; touch /tmp/ext.done ) &
OUT=$OUT bash benchmarks/gpu/bundle.sh \
  'harness=DEADLINE=190 bash plugins/tensorrt/tests/run_on_gpu.sh' \
  'trtw4=DEADLINE=160 bash benchmarks/gpu/trt_w4_plugins.sh' \
  'latency=until [ -f /tmp/ms.done ] && [ -f /tmp/ext.done ]; do sleep 2; done; timeout 190 python3 benchmarks/bench_latency.py --shapes m2-2.7b,2.8b,m2-130m --repeats 2 --impls edge-quamba,edge-quamba-w4a8,edge-quamba-w4a16,mamba_ssm --out $OUT --token-choice device --name latency_quamba2'
tar czf "$OUT/bundle.tgz" -C /tmp bundle
