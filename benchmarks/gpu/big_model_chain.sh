#!/usr/bin/env bash
# The large prose model's quality table in three GPU-machine calls issued back to back on one warm machine (the
# 103 M-parameter model is too large to come back, so it is retrained in stage 1 and lives in /tmp until the machine
# is released). Run from the repository root; every stage writes its files under $OUT and logs to $OUT/stageN.log.
#
#   bash benchmarks/gpu/big_model_chain.sh 1   # carry .sdists .train_data/prose/train.txt.xz .train_data/train.txt.xz
#   bash benchmarks/gpu/big_model_chain.sh 2   # carry .whl (lm-eval and its pure-Python dependencies)
#   bash benchmarks/gpu/big_model_chain.sh 3   # carry nothing extra
#   bash benchmarks/gpu/big_model_chain.sh 4   # carry nothing extra
#
# 1. big_model_train.sh (mamba_ssm built for sm_90, 80 s of training: the measured recipe) and, while mamba_ssm
#    builds and the GPU is idle, the Mamba2 demo model's training (export/recipes/train_demo.py --arch mamba2, the
#    command of edge_quamba/assets/demo_model_mamba2/README; its folder comes back as a split tar).
# 2. benchmarks/quality.py on the large model, calibration seed 0, every variant (W8A8 ablation and options, the
#    4-bit configs), the last-word task through lm-eval for fp16 and the default recipe; a deadline leaves what was
#    measured and the JSON is kept in /tmp for stage 3.
# 3. the same command with --seeds 0,1 --resume: seed 1 of every variant (and whatever stage 2's deadline skipped),
#    without the last-word task; meanwhile the CUDA kernel binding builds on the CPU for stage 4.
# 4. resumes once more if stage 3's deadline left runs (QUALITY_DEADLINE, default 200 s), then the per-token
#    out_proj scale's CUDA tests and kernel timing on the idle GPU (benchmarks/gpu/dynscale_h200.sh).
set -o pipefail
STAGE=${1:?stage 1, 2, 3 or 4}
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PATH=$PATH:/usr/local/cuda/bin
MODEL_DIR=/tmp/edge_quamba_big
QUALITY=(benchmarks/quality.py --device cuda --model "$MODEL_DIR" --eval-data calib_data/prose/evaluation.txt
         --calib-data calib_data/prose/calibration.txt --seq-lens 512,2048 --sqnr-windows 2
         --variants "fp16,w8a8 naive,w8a8 +percentile,w8a8 +hadamard,w8a8 quamba,quamba +clip out_proj,quamba +clip in_proj,quamba +clip all inputs,quamba per-channel w,clip all + per-channel w,quamba p=0.999,quamba p=0.9999,quamba p=0.999999,quamba dynamic out_proj,w4a8 g64,w4a16 g64,w4a8 g128,w4a16 g128"
         --last-word-examples 100 --out-prefix "$OUT/quality_big_h200")
t0=$(date +%s)

case $STAGE in
1)
    ( timeout 300 python3 export/recipes/train_demo.py --arch mamba2 --out /tmp/dm2 --batch-size 32 --steps 400 \
          --warmup 40 --max-seconds 95 --eval-every 100 --log-every 50 --train-text .train_data/train.txt.xz \
          > /tmp/demo_model_mamba2_training.txt 2>&1
      echo "mamba2 demo training rc $? after $(( $(date +%s) - t0 )) s" >> /tmp/demo_model_mamba2_training.txt
      mkdir -p "$OUT/m2"
      tar -C /tmp -cf - dm2 demo_model_mamba2_training.txt | split -b 15M - "$OUT/m2/dm2.tar.part-" ) &
    m2=$!
    TRAIN_SECONDS=80 WARMUP=30 DEADLINE=470 bash benchmarks/gpu/big_model_train.sh 2>&1 | tail -40
    wait $m2
    tail -8 /tmp/demo_model_mamba2_training.txt
    ;;
2)
    [ -f "$MODEL_DIR/config.json" ] || { echo "no model at $MODEL_DIR: stage 1 must run first on this machine"; exit 1; }
    python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site .whl/* 2>&1 | tail -3
    PYTHONPATH=/tmp/site:$PWD timeout 560 python3 "${QUALITY[@]}" --seeds 0 --deadline-seconds 470 \
        --last-word-variants "fp16,quamba +clip out_proj" 2>&1 | tee "$OUT/stage2.log"
    cp "$OUT/quality_big_h200.json" /tmp/quality_big_stage2.json
    ;;
3)
    [ -f /tmp/quality_big_stage2.json ] || { echo "no stage-2 JSON: stages 1 and 2 must run first"; exit 1; }
    MAX_JOBS=8 EDGE_QUAMBA_CUDA_BUILD_DIR=/tmp/eq_cuda_ext timeout 400 python3 -c \
        "from edge_quamba.ops import cuda_ops; cuda_ops.load_extension()" > /tmp/binding_build.txt 2>&1 &
    timeout 560 python3 "${QUALITY[@]}" --seeds 0,1 --deadline-seconds 480 --last-word-variants "" \
        --resume /tmp/quality_big_stage2.json 2>&1 | tee "$OUT/stage3.log"
    cp "$OUT/quality_big_h200.json" /tmp/quality_big_stage3.json
    wait
    echo "kernel binding build (background): $(tail -1 /tmp/binding_build.txt)"
    ;;
4)
    [ -f /tmp/quality_big_stage3.json ] || { echo "no stage-3 JSON: stages 1 to 3 must run first"; exit 1; }
    if python3 -c "import json, sys; sys.exit(json.load(open('/tmp/quality_big_stage3.json'))['complete'])"; then
        timeout $(( ${QUALITY_DEADLINE:-200} + 60 )) python3 "${QUALITY[@]}" --seeds 0,1 --last-word-variants "" \
            --deadline-seconds "${QUALITY_DEADLINE:-200}" --resume /tmp/quality_big_stage3.json 2>&1 \
            | tee "$OUT/stage4.log"
    fi
    mkdir -p "$OUT/dynscale"
    OUT="$OUT/dynscale" EDGE_QUAMBA_CUDA_BUILD_DIR=/tmp/eq_cuda_ext timeout $(( 590 - $(date +%s) + t0 )) \
        bash benchmarks/gpu/dynscale_h200.sh
    ;;
*)
    echo "stage must be 1, 2, 3 or 4"; exit 2
    ;;
esac
echo "[$(( $(date +%s) - t0 )) s] stage $STAGE done"
