#!/usr/bin/env bash
# `make demo`: generate synthetic people (if missing), train the CPU-sized PGNet demo config,
# evaluate COCO key-point AP on the synthetic val split and where it is lost, draw predicted
# skeletons on val images, plot the training loss and val AP, and print where everything is.
#
# Usage: bash tools/demo.sh [DATA_ROOT] [WORK_DIR]
# Environment: PYTHON (default .venv/bin/python), DEMO_TRAIN_IMAGES (2000), DEMO_VAL_IMAGES (200),
#              DEMO_EPOCHS (the config's), DEMO_AMP (1: bfloat16 autocast on CPU; 0: float32).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-data/synthetic_coco}
WORK=${2:-work_dirs/demo}
PY=${PYTHON:-.venv/bin/python}
CONFIG=configs/pgnet/pgnet_res18_cffm_demo_synthetic-128x96.py
NUM_TRAIN=${DEMO_TRAIN_IMAGES:-2000}
NUM_VAL=${DEMO_VAL_IMAGES:-200}
start=$(date +%s)
mkdir -p "$WORK"

echo "==> [demo 1/5] data: $DATA"
if [ -f "$DATA/annotations/person_keypoints_train.json" ] && [ -f "$DATA/annotations/person_keypoints_val.json" ]; then
  echo "synthetic dataset found, not regenerating (delete $DATA to make a new one)"
else
  "$PY" tools/dataset_converters/generate_synthetic_coco.py "$DATA" --num-train "$NUM_TRAIN" --num-val "$NUM_VAL" --seed 0
fi
"$PY" tools/analysis/mean_pose_baseline.py "$DATA" | tee "$WORK/baseline.txt"

echo "==> [demo 2/5] train $CONFIG"
TRAIN_ARGS=(--work-dir "$WORK" --synthetic-data "$DATA")
[ "${DEMO_AMP:-1}" = 1 ] && TRAIN_ARGS+=(--amp)
# a shorter (or longer) run keeps the shape of the schedule: the cosine decay (param_scheduler[1])
# ends with the run, and the last epoch is validated and saved
E=${DEMO_EPOCHS:-}
[ -n "$E" ] && TRAIN_ARGS+=(--cfg-options "train_cfg.max_epochs=$E" "param_scheduler.1.end=$E"
  "param_scheduler.1.T_max=$E" "default_hooks.checkpoint.interval=$E")
"$PY" tools/train.py "$CONFIG" "${TRAIN_ARGS[@]}"
CKPT=$(ls -t "$WORK"/best_coco_AP_epoch_*.pth "$WORK"/epoch_*.pth 2>/dev/null | head -n 1)
[ -n "$CKPT" ] || { echo "demo: training wrote no checkpoint in $WORK" >&2; exit 1; }

echo "==> [demo 3/5] evaluate $CKPT on the synthetic val split"
"$PY" tools/test.py "$CONFIG" "$CKPT" --synthetic-data "$DATA" --work-dir "$WORK/test" \
  --out "$WORK/metrics.json" --cfg-options test_evaluator.outfile_prefix="$WORK/test/predictions"
echo "where the AP is lost (per-key-point OKS, oracle APs):"
"$PY" tools/analysis/keypoint_error_analysis.py "$DATA/annotations/person_keypoints_val.json" \
  "$WORK/test/predictions.keypoints.json" --out "$WORK/error_analysis.md"

echo "==> [demo 4/5] predicted skeletons on val images"
"$PY" tools/analysis/visualize_val_predictions.py "$CONFIG" "$CKPT" "$DATA" --out-dir "$WORK/vis" --num 8

echo "==> [demo 5/5] curves"
"$PY" tools/analysis/plot_training_curves.py "$WORK" --out "$WORK/training_curves.png"

end=$(date +%s)
AP=$("$PY" -c "import json; print('%.3f' % json.load(open('$WORK/metrics.json'))['coco/AP'])")
cat <<MSG

PGNet demo finished in $(( (end - start) / 60 )) min $(( (end - start) % 60 )) s.
  COCO key-point AP on the synthetic val split: $AP   ($(cat "$WORK/baseline.txt"))
  metrics:          $WORK/metrics.json
  error analysis:   $WORK/error_analysis.md
  checkpoint:       $CKPT
  skeleton overlays: $WORK/vis/*.png
  curves:           $WORK/training_curves.png
MSG
