#!/usr/bin/env bash
# Installs the pinned OpenMMLab stack and mmpgnet into a virtualenv, step by step.
#
# Usage: tools/install/install.sh [VENV_DIR]   (default: .venv; the Makefile calls it)
#
# Environment:
#   PYTHON           interpreter that creates the venv (default: python3.11)
#   MMCV_FIND_LINKS  space-separated folders that may hold a prebuilt mmcv 2.1.0 wheel
#                    (the Makefile passes ../shared/wheels when it exists)
#   MMCV_WHEEL_CACHE where a wheel built from the sdist is kept for the next install
#                    (default: .cache/wheels)
#
# Every step prints what it does; a failed step stops the install with a message naming the step.
set -uo pipefail

VENV=${1:-.venv}
PYTHON=${PYTHON:-python3.11}
HERE=$(cd "$(dirname "$0")/../.." && pwd)
cd "$HERE"
CONSTRAINTS="$HERE/requirements/constraints.txt"

step() { echo; echo "==> [install] $1"; }
fail() { echo; echo "make install: step '$1' failed: $2" >&2; exit 1; }

step "venv: create $VENV with $PYTHON"
if [ ! -x "$VENV/bin/python" ]; then
  command -v "$PYTHON" >/dev/null || fail venv "no '$PYTHON' on PATH (set PYTHON=/path/to/python3.11)"
  "$PYTHON" -m venv "$VENV" || fail venv "'$PYTHON -m venv $VENV' did not succeed"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --disable-pip-version-check -c "$CONSTRAINTS")

step "build tools: setuptools<80 (mmpose imports pkg_resources), wheel"
"${PIP[@]}" -q "setuptools<80" wheel || fail "build tools" "pip could not install setuptools<80 and wheel"

step "torch: torch 2.14.1 + torchvision 0.29.1, numpy<2"
"${PIP[@]}" -q -r requirements/torch.txt "numpy<2" \
  || fail torch "pip could not install torch==2.14.1 torchvision==0.29.1 (see the pip output above)"

step "runtime: mmengine 0.10.7, mmpose's real deps (no chumpy), pycocotools"
"${PIP[@]}" -q -r requirements/runtime.txt || fail runtime "pip could not install requirements/runtime.txt"

step "mmcv: mmcv 2.1.0 with its compiled CPU ops"
PY="$PY" bash tools/install/install_mmcv.sh || fail mmcv "see the messages above (wheel lookup, sdist download, C++20 build)"

step "mmdet: mmdet 3.3.0 (its mmcv requirement is now met by the step above)"
"${PIP[@]}" -q mmdet==3.3.0 || fail mmdet "pip could not install mmdet==3.3.0"

step "mmpose: mmpose 1.3.2 without its chumpy dependency"
"${PIP[@]}" -q --no-deps mmpose==1.3.2 || fail mmpose "pip could not install mmpose==1.3.2 --no-deps"

step "tests: pytest"
"${PIP[@]}" -q -r requirements/tests.txt || fail tests "pip could not install requirements/tests.txt"

step "mmpgnet: editable install of this repository"
"${PIP[@]}" -q --no-deps --no-build-isolation -e . || fail mmpgnet "pip install -e . did not succeed"

step "check: import the whole stack"
"$PY" -c "import mmcv.ops, mmdet.models, mmdet.apis, mmpose.models, mmpose.apis, mmpgnet; print('stack OK: torch', __import__('torch').__version__, '| mmcv', mmcv.__version__, '| mmdet', __import__('mmdet').__version__, '| mmpose', __import__('mmpose').__version__)" \
  || fail check "the installed stack does not import (see the traceback above)"
