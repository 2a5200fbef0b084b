#!/usr/bin/env bash
# Build and install the mamba_ssm baseline of benchmarks/bench_latency.py on the GPU machine (no network there).
#
#   bash benchmarks/gpu/build_mamba_ssm.sh [SDIST] [WORKDIR]
#
# SDIST: the mamba-ssm 2.3.2.post1 source archive (default .sdists/mamba_ssm-2.3.2.post1.tar.gz, fetched on a machine
# with network by `python3 -m pip download --no-deps --no-build-isolation --no-binary :all: mamba-ssm==2.3.2.post1
# -d .sdists` with MAMBA_SKIP_CUDA_BUILD=TRUE; .sdists/ is git-ignored: third-party code never enters git).
# Its setup.py compiles for eight GPU architectures; this keeps only arch=compute_90,code=sm_90 (H200), which
# measured 135 s at MAX_JOBS=12. MAMBA_FORCE_BUILD=TRUE skips its attempt to download a prebuilt wheel.
# causal-conv1d is NOT built (it did not finish in 330 s even for sm_90 alone): mamba_ssm then runs its PyTorch
# conv fallback, and bench_latency.py says so in its results.
set -euo pipefail

SDIST=${1:-.sdists/mamba_ssm-2.3.2.post1.tar.gz}
WORK=$(realpath -m "${2:-/tmp/mamba_ssm_build}")

if python3 -c "import mamba_ssm" 2>/dev/null; then
    echo "mamba_ssm already importable: $(python3 -c 'import mamba_ssm; print(mamba_ssm.__version__)')"
    exit 0
fi
[ -f "$SDIST" ] || { echo "build_mamba_ssm.sh: no sdist at $SDIST" >&2; exit 1; }

rm -rf "$WORK" && mkdir -p "$WORK"
tar -xzf "$SDIST" -C "$WORK"
SRC=$(find "$WORK" -maxdepth 1 -mindepth 1 -type d -name 'mamba_ssm-*' | head -n 1)

python3 "$(dirname "$0")/keep_sm90.py" "$SRC/setup.py"

start=$(date +%s)
(cd "$SRC" && MAMBA_FORCE_BUILD=TRUE MAX_JOBS=${MAX_JOBS:-12} TORCH_CUDA_ARCH_LIST=9.0 \
    python3 -m pip wheel --no-build-isolation --no-deps -w "$WORK/dist" . )
echo "mamba_ssm wheel built in $(( $(date +%s) - start )) s"
python3 -m pip install --no-deps "$WORK"/dist/mamba_ssm-*.whl
python3 -c "import mamba_ssm; print('mamba_ssm', mamba_ssm.__version__, 'installed')"
