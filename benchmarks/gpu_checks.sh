#!/usr/bin/env bash
# The GPU checks, prepared as one script for a lent GPU machine (15 minutes of device time a
# session, 10 minutes a command), so that no device time goes on typing commands.
#
#   bash benchmarks/gpu_checks.sh tests        # the test suite on CUDA, fp16/bf16 included (~3 min)
#   bash benchmarks/gpu_checks.sh throughput   # ConvVAE training images/s, batch 1024, compiled (~2 min)
#   bash benchmarks/gpu_checks.sh quality      # ConvVAE quality recipe on the GPU + subset NLL (~5 min)
#   bash benchmarks/gpu_checks.sh all          # the three in turn (over one command's 10 minutes)
#
# What the machine needs: python3 with torch (the device image has it, plus safetensors,
# huggingface_hub, einops, pyyaml, tqdm, pytest, pytest-xdist); vaekit runs from src/ (no
# install). The quality step needs the Fashion-MNIST .gz files, which cannot be downloaded
# there: copy them into a folder that git ignores and carry it, e.g.
#
#   mkdir -p .gpu-data && cp /usr/share/datasets/fashion-mnist/*.gz .gpu-data/   (.gitignore'd)
#   device run: carry [".gpu-data"], command "bash benchmarks/gpu_checks.sh all"
#
# Results go to $OUT (the device tool's return folder) or ./gpu-out, at most 8 files.
# GPU_CHECKS_SMOKE=1 GPU_CHECKS_DEVICE=cpu bash benchmarks/gpu_checks.sh quality is a
# one-minute smoke test of the script on a CPU (20 steps, 50 images, K = 5).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
DEVICE=${GPU_CHECKS_DEVICE:-cuda}
EPOCHS=${GPU_CHECKS_EPOCHS:-30}
TRAIN_LIMITS=() EVAL_ARGS=(--limit 500 --num-samples 1000)
if [ -n "${GPU_CHECKS_SMOKE:-}" ]; then
    EPOCHS=1 TRAIN_LIMITS=(--train.max_steps 20) EVAL_ARGS=(--limit 50 --num-samples 5)
fi
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
export VAEKIT_DATA_DIR=${VAEKIT_DATA_DIR:-$PWD/.gpu-data}
status=0

info() {
    { date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
      "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
    } | tee "$OUT/machine.txt"
}

tests() {
    # -x: the first failure is enough to see in a short lease; the log comes back in full.
    VAEKIT_TEST_DEVICE=$DEVICE timeout 300 "$PY" -m pytest -q -x -n 8 -p no:cacheprovider tests \
        2>&1 | tee "$OUT/tests.log" | tail -n 15 || status=1
}

throughput() {
    timeout 240 "$PY" benchmarks/throughput.py --device "$DEVICE" --model conv --batch-size 1024 \
        --compile --precisions fp32 bf16 fp16 --rounds 2 --json "$OUT/throughput.json" \
        2>&1 | tail -n 20 || status=1
}

quality() {
    local run=/tmp/vaekit-gpu-fashion-conv
    rm -rf "$run"
    local start=$SECONDS
    timeout 330 "$PY" -m vaekit.cli train --config benchmarks/configs/fashion_conv.yaml \
        --output-dir "$run" --device "$DEVICE" --epochs "$EPOCHS" --train.batch_size 256 \
        --train.kl_warmup_steps 2150 "${TRAIN_LIMITS[@]}" 2>&1 | tail -n 5 || status=1
    echo "training: $((SECONDS - start)) s for $EPOCHS epochs" | tee "$OUT/quality.txt"
    cp "$run/metrics.jsonl" "$OUT/fashion_conv_metrics.jsonl" 2>/dev/null
    timeout 120 "$PY" benchmarks/quality.py "$run" --device "$DEVICE" "${EVAL_ARGS[@]}" \
        --batch-size 500 --json "$OUT/fashion_conv_subset.json" \
        2>&1 | tee -a "$OUT/quality.txt" || status=1
}

info
case "${1:-all}" in
    tests) tests ;;
    throughput) throughput ;;
    quality) quality ;;
    all) tests; throughput; quality ;;
    *) echo "usage: $0 tests|throughput|quality|all" >&2; exit 2 ;;
esac
exit $status
