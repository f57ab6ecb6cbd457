#!/usr/bin/env bash
# The end-to-end demo behind `make demo`: data, a few minutes of training, evaluation against the input
# composites and the shipped demo model, full-resolution harmonization of examples/ with harmony scores.
# Runs on the CPU; every step is one of the project's own commands, printed before it runs.
#
# Knobs (environment): PYTHON, DEMO_DATA, DEMO_RESULTS, DEMO_PER_PHOTO, DEMO_ITERS, DEMO_NGF, DEMO_NUM_TEST,
# GPU_IDS. The defaults are docs/demo.md's demo; tests/test_demo.py runs it at toy size.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DATA=${DEMO_DATA:-datasets/demo}
RESULTS=${DEMO_RESULTS:-results/demo}
PER_PHOTO=${DEMO_PER_PHOTO:-96}
ITERS=${DEMO_ITERS:-600}
NGF=${DEMO_NGF:-8}
NUM_TEST=${DEMO_NUM_TEST:-inf}
GPU_IDS=${GPU_IDS:--1}
# test.py and harmonize.py take each model's settings from its folder's train_opt.txt: no dropout; running BatchNorm
# statistics for the few-minute model (batch 4, plain BatchNorm: in a run this short, 4 times the steps of batch 16
# train further), each image's own statistics for the demo model (--per_image_norm)

step() { printf '\n\033[1m== %s\033[0m\n' "$1"; }
run() { printf '$ %s\n' "$*"; "$@"; }

step "1/5 Build an iHarmony4-layout dataset from the scikit-image photographs"
if [ -f "$DATA/IHD_train.txt" ]; then
  echo "using $DATA (already built)"
else
  run "$PY" scripts/make_synthetic_dataset.py --out "$DATA" --per_photo "$PER_PHOTO" --views 24 --large_side 0 \
    --max_side 640 --gray_photos --view_jitter 1 --seed 0
fi
run "$PY" scripts/check_dataset.py --dataset_root "$DATA"

step "2/5 Train a small BargainNet for a few minutes ($ITERS iterations of batch 4, ngf $NGF)"
rm -rf "$RESULTS/checkpoints/quick"
run "$PY" train.py --dataset_root "$DATA" --checkpoints_dir "$RESULTS/checkpoints" --name quick --gpu_ids "$GPU_IDS" \
  --ngf "$NGF" --ndf "$NGF" --no_dropout --batch_size 4 --lr 1e-3 --beta1 0.9 --niter 1000 --niter_decay 0 \
  --max_iters "$ITERS" --print_freq 10 --display_id 0 --num_threads 2
echo "loss log: $RESULTS/checkpoints/quick/loss_log.txt (first and last lines):"
grep '^(epoch' "$RESULTS/checkpoints/quick/loss_log.txt" | sed -n '1p;$p'

step "3/5 Evaluate on the held-out composites (photos that training never saw)"
TEST=(--dataset_root "$DATA" --results_dir "$RESULTS" --gpu_ids "$GPU_IDS" --num_test "$NUM_TEST" --batch_size 8
      --num_threads 2)
run "$PY" test.py "${TEST[@]}" --name inputs --baseline composite
run "$PY" test.py "${TEST[@]}" --checkpoints_dir "$RESULTS/checkpoints" --name quick
run "$PY" test.py "${TEST[@]}" --checkpoints_dir checkpoints --name demo

step "4/5 Input composites, the few-minute model and the demo model, side by side"
run "$PY" scripts/compare_results.py --paired "input composites=$RESULTS/inputs/composite_test" \
  "few-minute model ($ITERS iterations)=$RESULTS/quick/latest_test" "demo model=$RESULTS/demo/latest_test"

step "5/5 Harmonize examples/ at full resolution with the demo model, harmony scores before and after"
run "$PY" scripts/harmonize.py --image examples/composite --mask examples/mask --checkpoints_dir checkpoints \
  --name demo --gpu "${GPU_IDS%%,*}" --out "$RESULTS/examples" --score

step "Done"
echo "results page of the demo model:  $RESULTS/demo/latest_test/index.html"
echo "its harmonized 256x256 images:    $RESULTS/demo/latest_test/images/"
echo "per-image metrics:                $RESULTS/demo/latest_test/metrics.csv"
echo "harmonized examples (full size):  $RESULTS/examples/"
echo "training log of the quick model:  $RESULTS/checkpoints/quick/loss_log.txt"
