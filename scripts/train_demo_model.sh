#!/usr/bin/env bash
# Trains the demo model shipped in checkpoints/demo/ with the project's own train.py, reproducibly, and records
# the exact command, seed, sample count, hardware and time in checkpoints/demo/TRAINING.md.
#
#   bash scripts/train_demo_model.sh            # about 70 minutes on 2 free CPU cores
#   GPU_IDS=0 bash scripts/train_demo_model.sh  # on a GPU
#
# The fast recipe of docs/fast_training.md: batch 16 with every image normalized by its own statistics
# (--per_image_norm), the learning rate scaled linearly from the released 1e-4 at batch 1 (1.6e-3) with a warm-up
# over the first 10% of the steps, 33 epochs (17 at that rate, then a linear decay to 0). Started again after an
# interruption, it resumes exactly from the last saved training state.
#
# The dataset is the one `make demo` builds (same command, same seed): its test split comes from photos that
# training never sees (chelsea and stereo_motorcycle), so the demo evaluates on held-out photos. Against
# memorizing the few training photos' colours, every training real image gets a random global colour change
# (--view_jitter) and scikit-image's greyscale photographs join the training split, coloured (--gray_photos).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DATA=${DEMO_DATA:-datasets/demo}
OUT=${DEMO_CHECKPOINTS:-checkpoints}
NAME=${DEMO_NAME:-demo}
GPU_IDS=${GPU_IDS:--1}
SEED=0
BATCH=16
NGF=16
NDF=16
NITER=${DEMO_NITER:-17}
NITER_DECAY=${DEMO_NITER_DECAY:-16}

DATASET_CMD=("$PY" scripts/make_synthetic_dataset.py --out "$DATA" --per_photo 96 --views 24 --large_side 0
             --max_side 640 --gray_photos --view_jitter 1 --seed "$SEED")
[ -f "$DATA/IHD_train.txt" ] || "${DATASET_CMD[@]}"

train_count=$(grep -c . "$DATA/IHD_train.txt")
epochs=$((NITER + NITER_DECAY))
iters_per_epoch=$(((train_count + BATCH - 1) / BATCH))
warmup=$(((epochs * iters_per_epoch + 5) / 10))  # 10% of the steps, rounded
TRAIN_CMD=("$PY" train.py --dataset_root "$DATA" --checkpoints_dir "$OUT" --name "$NAME" --gpu_ids "$GPU_IDS"
           --ngf "$NGF" --ndf "$NDF" --no_dropout --batch_size "$BATCH" --per_image_norm --lr 1.6e-3
           --lr_warmup "$warmup" --beta1 0.9 --niter "$NITER" --niter_decay "$NITER_DECAY" --num_threads 2
           --seed "$SEED" --save_epoch_freq 1000 --save_latest_freq 1600 --print_freq 50 --display_id 0 --no_html)
RESUME=()
[ -f "$OUT/$NAME/latest_train_state.pth" ] && RESUME=(--continue_train)
start=$(date -u +%s)
start_text=$(date -u '+%Y-%m-%d %H:%M UTC')
"${TRAIN_CMD[@]}" "${RESUME[@]}"
end=$(date -u +%s)

cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)
gpu=$([ "$GPU_IDS" = "-1" ] && echo "none" || "$PY" -c 'import torch; print(torch.cuda.get_device_name(0))')
torch_version=$("$PY" -c 'import torch; print(torch.__version__)')
cat > "$OUT/$NAME/TRAINING.md" <<RECORD
# How the demo model was trained

- dataset: \`${DATASET_CMD[*]}\` (${train_count} training composites from 16 photos, 6 in colour
  and 10 greyscale ones coloured; the test split comes from 2 other photos)
- training: \`${TRAIN_CMD[*]}\`
- seed: ${SEED}
- samples: ${epochs} epochs x ${train_count} composites = $((epochs * train_count)) training samples
  ($((epochs * iters_per_epoch)) iterations of batch ${BATCH}, the first ${warmup} warming up)
- hardware: CPU ${cpu:-unknown} ($(nproc) cores), GPU ${gpu}, torch ${torch_version}
- started ${start_text}, took $(( (end - start) / 60 )) minutes
- its numbers on the held-out composites and on scripts/make_outside_composites.py's, and the commands that
  produce them: \`metrics.json\` and \`metrics_outside.json\` beside this file (checked by \`tests/test_demo.py\`,
  shown in \`docs/demo.md\`)
RECORD
# keep what the demo needs: the weights (released format), the options, the loss log and this record
rm -rf "$OUT/$NAME"/*_train_state.pth "$OUT/$NAME/web"
echo "demo model written to $OUT/$NAME (record: $OUT/$NAME/TRAINING.md)"
