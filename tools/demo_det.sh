#!/usr/bin/env bash
# `make demo-det`: generate synthetic people (if missing), train the CPU-sized Faster R-CNN of
# PGNet's Table 3 on their boxes, evaluate COCO box AP on the synthetic val split with
# MMDetection's metric, and print where everything is.
#
# Usage: bash tools/demo_det.sh [DATA_ROOT] [WORK_DIR]
# Environment: PYTHON (default .venv/bin/python), DEMO_TRAIN_IMAGES (2000), DEMO_VAL_IMAGES (200),
#              DEMO_EPOCHS (the config's, 4), DEMO_DET_CONFIG (the GN + FPN config below).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-data/synthetic_coco}
WORK=${2:-work_dirs/demo_det}
PY=${PYTHON:-.venv/bin/python}
CONFIG=${DEMO_DET_CONFIG:-configs/cbn/faster-rcnn_r18-scratch_fpn_gn-all_demo_synthetic-320x240.py}
start=$(date +%s)
mkdir -p "$WORK"

echo "==> [demo-det 1/3] data: $DATA"
ANN="$DATA/annotations/person_keypoints"
if [ -f "${ANN}_train.json" ] && [ -f "${ANN}_val.json" ]; then
  echo "synthetic dataset found, not regenerating (delete $DATA to make a new one)"
else
  "$PY" tools/dataset_converters/generate_synthetic_coco.py "$DATA" \
    --num-train "${DEMO_TRAIN_IMAGES:-2000}" --num-val "${DEMO_VAL_IMAGES:-200}" --seed 0
fi

echo "==> [demo-det 2/3] train $CONFIG"
TRAIN_ARGS=(--work-dir "$WORK" --synthetic-data "$DATA")
E=${DEMO_EPOCHS:-}
[ -n "$E" ] && TRAIN_ARGS+=(--cfg-options "train_cfg.max_epochs=$E" "train_cfg.val_interval=$E"
  "param_scheduler.1.end=$E" "param_scheduler.1.T_max=$E" "default_hooks.checkpoint.interval=$E")
"$PY" tools/train.py "$CONFIG" "${TRAIN_ARGS[@]}"
CKPT=$(ls -t "$WORK"/epoch_*.pth 2>/dev/null | head -n 1)
[ -n "$CKPT" ] || { echo "demo-det: training wrote no checkpoint in $WORK" >&2; exit 1; }

echo "==> [demo-det 3/3] evaluate $CKPT on the synthetic val split"
"$PY" tools/test.py "$CONFIG" "$CKPT" --synthetic-data "$DATA" --work-dir "$WORK/test" \
  --out "$WORK/metrics.json"

end=$(date +%s)
AP=$("$PY" -c "import json; print('%.3f' % json.load(open('$WORK/metrics.json'))['coco/bbox_mAP'])")
cat <<MSG

Detection demo finished in $(( (end - start) / 60 )) min $(( (end - start) % 60 )) s.
  COCO box AP on the synthetic val split: $AP
  metrics:     $WORK/metrics.json
  checkpoint:  $CKPT
  the Table-3 grid (necks x norms, box losses, 2 seeds):
    python tools/analysis/ablate.py configs/ablations/faster-rcnn_demo_table3.py
MSG
