#!/usr/bin/env bash
# Which learning rate does a batch of 16 need to train like the released batch-1 recipe? Four arms on the demo
# dataset, same samples in the same order, same seed, small networks so that all of them fit in a few CPU hours:
#
#   b1      batch 1, lr 1e-4 (the released recipe)
#   b16x1   batch 16, --per_image_norm, lr 1e-4         (no scaling)
#   b16x4   batch 16, --per_image_norm, lr 4e-4         (square-root rule, sqrt(16) = 4)
#   b16x16  batch 16, --per_image_norm, lr 1.6e-3       (linear rule), warm-up over the first 10% of steps
#
# Every arm is then evaluated on the held-out composites with the released protocol (each image's own
# statistics), and compared with b1 image by image (compare_results.py --paired). Resumable: rerun the same
# command after an interruption; finished arms are skipped and an interrupted one resumes exactly.
#
#   bash scripts/lr_scaling.sh                    # SAMPLES=20480 NGF=8: about 2 hours on 2 CPU cores
#   SAMPLES=2048 bash scripts/lr_scaling.sh       # a quick look
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DATA=${LR_DATA:-datasets/demo}
OUT=${LR_OUT:-results/lr_scaling}
SAMPLES=${SAMPLES:-20480}
NGF=${NGF:-8}
GPU_IDS=${GPU_IDS:--1}
THREADS=${THREADS:-2}
NUM_TEST=${NUM_TEST:-inf}
BASE_LR=1e-4

[ -f "$DATA/IHD_train.txt" ] || "$PY" scripts/make_synthetic_dataset.py --out "$DATA" --per_photo 96 --views 24 \
  --large_side 0 --max_side 640 --gray_photos --view_jitter 1 --seed 0

arm() {  # name batch lr_multiplier [extra train flags...]
  local name=$1 batch=$2 mult=$3
  shift 3
  local iters=$((SAMPLES / batch))
  local lr
  lr=$("$PY" -c "print($BASE_LR * $mult)")
  local flags=(--dataset_root "$DATA" --checkpoints_dir "$OUT/checkpoints" --name "$name" --gpu_ids "$GPU_IDS"
               --ngf "$NGF" --ndf "$NGF" --no_dropout --batch_size "$batch" --lr "$lr" --beta1 0.9 --lr_policy step
               --lr_decay_iters 6574200 --niter 100000 --niter_decay 0 --max_iters "$iters" --seed 0
               --num_threads "$THREADS" --display_id 0 --no_html --print_freq $((iters / 40 > 0 ? iters / 40 : 1))
               --save_latest_freq $((iters / 10 > 0 ? iters / 10 : 1)) "$@")
  if [ -f "$OUT/$name/latest_test/summary.json" ]; then
    echo "$name: done"
    return
  fi
  if [ -f "$OUT/checkpoints/$name/latest_train_state.pth" ]; then
    "$PY" train.py "${flags[@]}" --continue_train
  else
    "$PY" train.py "${flags[@]}"
  fi
  "$PY" test.py --dataset_root "$DATA" --checkpoints_dir "$OUT/checkpoints" --results_dir "$OUT" --name "$name" \
    --gpu_ids "$GPU_IDS" --no_eval --num_test "$NUM_TEST" --batch_size 8 --num_threads "$THREADS" --num_html 4
}

arm b1 1 1
arm b16x1 16 1 --per_image_norm
arm b16x4 16 4 --per_image_norm
arm b16x16 16 16 --per_image_norm --lr_warmup $((SAMPLES / 16 / 10))

"$PY" scripts/compare_results.py --paired "b1 (batch 1, lr 1e-4)=$OUT/b1/latest_test" \
  "b16x1 (batch 16, lr 1e-4)=$OUT/b16x1/latest_test" "b16x4 (batch 16, lr 4e-4)=$OUT/b16x4/latest_test" \
  "b16x16 (batch 16, lr 1.6e-3, warm-up)=$OUT/b16x16/latest_test" | tee "$OUT/table.md"
