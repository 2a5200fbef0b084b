#!/usr/bin/env bash
# Run several one-call GPU scripts in one device call, each with its own output folder, and bring every file back as
# one archive (the device tool returns at most 8 files): bash benchmarks/gpu/bundle.sh 'NAME=COMMAND' ...
# Each COMMAND runs from the repository root with OUT=/tmp/bundle/NAME; its stdout/stderr go to NAME.log there and
# its last 15 lines to this script's stdout. Everything under /tmp/bundle ends up in $OUT/bundle.tgz (rewritten after
# each job).
set -u
OUT=${OUT:-gpu-out}
mkdir -p "$OUT" /tmp/bundle
export EDGE_QUAMBA_CUDA_BUILD_DIR=${EDGE_QUAMBA_CUDA_BUILD_DIR:-$PWD/build/eq_cuda_ext}  # kept while the machine is warm
{ date -u; git log --oneline -1 2>/dev/null; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } | tee /tmp/bundle/machine.txt
for job in "$@"; do
  name=${job%%=*}; cmd=${job#*=}
  mkdir -p "/tmp/bundle/$name"
  start=$(date +%s)
  OUT=/tmp/bundle/$name bash -c "$cmd" > "/tmp/bundle/$name.log" 2>&1
  rc=$?
  echo "=== $name: rc $rc in $(( $(date +%s) - start )) s"
  tail -15 "/tmp/bundle/$name.log"
  tar czf "$OUT/bundle.tgz" -C /tmp bundle  # after every job: a call cut off at its limit still brings back the rest
done
