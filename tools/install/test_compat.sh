#!/usr/bin/env bash
# `make test-compat`, after the Makefile installed the torch 2.1 stack and the built wheel into
# VENV (tools/install/install.sh with STACK=torch2.1 MMPGNET_INSTALL=wheel): checks the installed
# package as an OpenMMLab user would meet it.
#
#   1. the non-slow test suite against the *installed* mmpgnet (MMPGNET_TEST_INSTALLED=1, python -P:
#      the checkout is not on sys.path; conftest.py fails if mmpgnet comes from the checkout);
#   2. MMEngine finds the packaged configs: get_config('mmpgnet::pgnet/...');
#   3. MIM finds them too: `mim train mmpgnet <config name>` trains the demo config for one short
#      epoch on a few synthetic images and `mim test mmpgnet` evaluates its checkpoint;
#   4. a stock MMPose config (SimpleBaseline ResNet-50) with neck=dict(type='CFFM') through
#      custom_imports trains a few iterations through the packaged tools.
#
# Usage: bash tools/install/test_compat.sh [VENV]   (default .venv-compat)
# Environment: PYTEST_ARGS (extra pytest arguments).
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=$(cd "${1:-.venv-compat}" && pwd)
PY="$VENV/bin/python"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
step() { echo; echo "==> [test-compat] $1"; }

step "stack: $("$PY" -P -c "import torch, mmcv, mmpgnet; print('torch', torch.__version__, '| mmcv', mmcv.__version__, '| mmpgnet', mmpgnet.__version__, 'from', mmpgnet.__path__[0])")"
"$PY" -P -c "import mmpgnet, os; assert 'site-packages' in mmpgnet.__path__[0], mmpgnet.__path__" \
  || { echo "test-compat: mmpgnet is not the installed wheel" >&2; exit 1; }

step "1/4 the non-slow suite against the installed wheel"
MMPGNET_TEST_INSTALLED=1 "$PY" -P -m pytest -m "not slow" -p no:cacheprovider ${PYTEST_ARGS:-}

step "2/4 get_config('mmpgnet::pgnet/...') reads the packaged config"
"$PY" -P - <<'PYTHON'
import mmpgnet  # noqa: F401  (tells MMEngine about the mmpgnet:: prefix)
from mmengine.hub import get_config
cfg = get_config('mmpgnet::pgnet/pgnet_res18_cffm_demo_synthetic-128x96.py')
assert cfg.model.neck.type.endswith('CFFM'), cfg.model.neck
cfg = get_config('mmpgnet::cbn/pgnet_res50_cffm_cbn_8xb64-210e_coco-256x192.py')
print('get_config OK:', cfg.model.type, cfg.model.neck.type, cfg.norm_cfg.type)
PYTHON

step "3/4 mim train / mim test find the packaged configs and tools"
"$VENV/bin/mim" --version >/dev/null 2>&1 || "$PY" -m pip install -q --disable-pip-version-check \
  -c requirements/constraints-torch2.1.txt openmim
DATA="$WORK/data"
"$PY" -P "$VENV/lib/python3"*/site-packages/mmpgnet/.mim/tools/dataset_converters/generate_synthetic_coco.py \
  "$DATA" --num-train 8 --num-val 4 --seed 0
SHORT=(train_dataloader.batch_size=4 val_dataloader.batch_size=4 train_cfg.max_epochs=1
       param_scheduler.1.end=1 param_scheduler.1.T_max=1 default_hooks.checkpoint.interval=1)
(cd "$WORK" && PATH="$VENV/bin:$PATH" mim train mmpgnet pgnet_res18_cffm_demo_synthetic-128x96.py \
  --work-dir "$WORK/demo" --synthetic-data "$DATA" --cfg-options "${SHORT[@]}")
CKPT=$(ls "$WORK"/demo/epoch_1.pth)
(cd "$WORK" && PATH="$VENV/bin:$PATH" mim test mmpgnet pgnet_res18_cffm_demo_synthetic-128x96.py \
  --checkpoint "$CKPT" --synthetic-data "$DATA" --work-dir "$WORK/demo_test" --out "$WORK/metrics.json")
"$PY" -P -c "import json; m = json.load(open('$WORK/metrics.json')); assert 'coco/AP' in m, m; print('mim test OK: coco/AP', m['coco/AP'])"

step "4/4 a stock MMPose config with neck=dict(type='CFFM') through custom_imports"
cat > "$WORK/td-hm_res50_cffm_stock.py" <<'CONFIG'
_base_ = ['mmpose::body_2d_keypoint/topdown_heatmap/coco/td-hm_res50_8xb64-210e_coco-256x192.py']
custom_imports = dict(imports=['mmpgnet'], allow_failed_imports=False)
model = dict(
    backbone=dict(init_cfg=None, out_indices=(0, 1, 2, 3)),
    neck=dict(type='CFFM', in_channels=[256, 512, 1024, 2048], out_channels=256,
              out_mode='single', single_level=0),
    head=dict(in_channels=256, deconv_out_channels=None, deconv_kernel_sizes=None))
CONFIG
(cd "$WORK" && PATH="$VENV/bin:$PATH" mim train mmpgnet "$WORK/td-hm_res50_cffm_stock.py" \
  --work-dir "$WORK/stock" --synthetic-data "$DATA" \
  --cfg-options train_dataloader.batch_size=2 train_dataloader.dataset.indices=4 \
  train_cfg.max_epochs=1 train_cfg.val_interval=2 default_hooks.checkpoint.interval=1)
ls "$WORK"/stock/epoch_1.pth >/dev/null
echo; echo "test-compat: all four checks passed on $("$PY" -c 'import torch; print("torch", torch.__version__)')"
