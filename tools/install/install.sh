#!/usr/bin/env bash
# Installs the pinned OpenMMLab stack and mmpgnet into a virtualenv, step by step.
#
# Usage: tools/install/install.sh [VENV_DIR]   (default: .venv; the Makefile calls it)
#
# Environment:
#   PYTHON           interpreter that creates the venv (default: python3.11)
#   STACK            which pinned stack: `main` (torch 2.14.1, requirements/constraints.txt; the
#                    default) or `torch2.1` (torch 2.1.2 + torchvision 0.16.2, the environment
#                    MMPose 1.3 / MMDetection 3.3 were released for: requirements/*torch2.1.txt)
#   MMPGNET_INSTALL  `editable` (pip install -e ., the default) or `wheel`: build the sdist and
#                    wheel with `python -m build` into dist/ and install the wheel (not editable)
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
STACK=${STACK:-main}
MMPGNET_INSTALL=${MMPGNET_INSTALL:-editable}
case "$STACK" in
  main) CONSTRAINTS=requirements/constraints.txt; TORCH_REQUIREMENTS=requirements/torch.txt ;;
  torch2.1) CONSTRAINTS=requirements/constraints-torch2.1.txt
            TORCH_REQUIREMENTS=requirements/torch2.1.txt ;;
  *) echo "make install: unknown STACK='$STACK' (expected main or torch2.1)" >&2; exit 1 ;;
esac
case "$MMPGNET_INSTALL" in
  editable|wheel) ;;
  *) echo "make install: unknown MMPGNET_INSTALL='$MMPGNET_INSTALL' (expected editable or wheel)" >&2; exit 1 ;;
esac
CONSTRAINTS="$HERE/$CONSTRAINTS"
TORCH_REQUIREMENTS="$HERE/$TORCH_REQUIREMENTS"
TORCH_PINS=$(grep -v '^#' "$TORCH_REQUIREMENTS" | tr '\n' ' ')

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

step "torch: $TORCH_PINS numpy<2"
"${PIP[@]}" -q -r "$TORCH_REQUIREMENTS" "numpy<2" \
  || fail torch "pip could not install $TORCH_PINS (see the pip output above)"

step "runtime: mmengine 0.10.7, mmpose's real deps (no chumpy), pycocotools"
"${PIP[@]}" -q -r requirements/runtime.txt || fail runtime "pip could not install requirements/runtime.txt"

step "mmcv: mmcv 2.1.0 with its compiled CPU ops"
PY="$PY" CONSTRAINTS="$CONSTRAINTS" bash tools/install/install_mmcv.sh || fail mmcv "see the messages above (wheel lookup, sdist download, C++ build)"

step "mmdet: mmdet 3.3.0 (its mmcv requirement is now met by the step above)"
"${PIP[@]}" -q mmdet==3.3.0 || fail mmdet "pip could not install mmdet==3.3.0"

step "mmpose: mmpose 1.3.2 without its chumpy dependency"
"${PIP[@]}" -q --no-deps mmpose==1.3.2 || fail mmpose "pip could not install mmpose==1.3.2 --no-deps"

step "tests: pytest"
"${PIP[@]}" -q -r requirements/tests.txt || fail tests "pip could not install requirements/tests.txt"

step "lint: flake8, isort (make lint)"
"${PIP[@]}" -q -r requirements/lint.txt || fail lint "pip could not install requirements/lint.txt"

if [ "$MMPGNET_INSTALL" = editable ]; then
  step "mmpgnet: editable install of this repository"
  "${PIP[@]}" -q --no-deps --no-build-isolation -e . || fail mmpgnet "pip install -e . did not succeed"
else
  step "mmpgnet: build the sdist and wheel (python -m build, the wheel from the sdist) and install the wheel"
  "${PIP[@]}" -q build || fail mmpgnet "pip could not install build"
  rm -rf dist/mmpgnet-*
  "$PY" -m build --outdir dist . >/dev/null || fail mmpgnet "python -m build did not succeed (run it to see why)"
  wheel=$(ls dist/mmpgnet-*-py3-none-any.whl 2>/dev/null | head -n 1)
  [ -n "$wheel" ] || fail mmpgnet "python -m build made no wheel in dist/"
  "${PIP[@]}" -q --no-deps --force-reinstall "$wheel" || fail mmpgnet "pip could not install $wheel"
  echo "installed $wheel"
fi

step "check: import the whole stack"
"$PY" -P -c "import mmcv.ops, mmdet.models, mmdet.apis, mmpose.models, mmpose.apis, mmpgnet; print('stack OK: torch', __import__('torch').__version__, '| mmcv', mmcv.__version__, '| mmdet', __import__('mmdet').__version__, '| mmpose', __import__('mmpose').__version__, '| mmpgnet from', mmpgnet.__path__[0])" \
  || fail check "the installed stack does not import (see the traceback above)"
