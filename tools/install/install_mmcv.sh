#!/usr/bin/env bash
# Installs mmcv 2.1.0 *with its compiled ops* (mmcv._ext) into the interpreter $PY.
#
# PyPI has no mmcv 2.1.0 wheel with ops for this machine's torch, so:
#   1. if a folder in $MMCV_FIND_LINKS or the wheel cache holds an mmcv 2.1.0 wheel that fits this
#      interpreter and its torch, install it;
#   2. otherwise download the sdist, set its C++ standard to the one the installed torch builds
#      extensions with (torch.utils.cpp_extension's -std flag: C++20 for torch 2.14, C++17 for
#      torch 2.1; mmcv 2.1.0's setup.py asks for C++14/17), build a wheel with MMCV_WITH_OPS=1 into
#      the cache (7-11 minutes on 2 cores) and install it.
# Either way the result is checked by importing mmcv.ops and mmcv._ext. The cache is kept per torch
# version (the wheels of different torch builds share one file name).
#
# Environment: PY (the interpreter), MMCV_FIND_LINKS, MMCV_WHEEL_CACHE (default
# .cache/wheels/torch-<version>), CONSTRAINTS (pip constraints; default requirements/constraints.txt).
set -uo pipefail

PY=${PY:-.venv/bin/python}
VERSION=2.1.0
TORCH=$("$PY" -c "import torch; print(torch.__version__.split('+')[0])") \
  || { echo "torch does not import in $PY: install it before mmcv" >&2; exit 1; }
CACHE=${MMCV_WHEEL_CACHE:-.cache/wheels/torch-$TORCH}
FIND_LINKS=${MMCV_FIND_LINKS:-}
# --force-reinstall: a wheel that did not fit (built for another torch) must not stay installed
PIP=("$PY" -m pip install --disable-pip-version-check -c "${CONSTRAINTS:-requirements/constraints.txt}" --force-reinstall)

check() { "$PY" -c "import mmcv, mmcv.ops; from mmcv import _ext; assert mmcv.__version__ == '$VERSION', mmcv.__version__" 2>/dev/null; }

if check; then echo "mmcv $VERSION with ops is already installed"; exit 0; fi

mkdir -p "$CACHE"
for dir in $FIND_LINKS "$CACHE"; do
  [ -d "$dir" ] || continue
  ls "$dir"/mmcv-$VERSION-*.whl >/dev/null 2>&1 || continue
  echo "trying the mmcv $VERSION wheel in $dir"
  if "${PIP[@]}" -q --no-deps --no-index --find-links "$dir" "mmcv==$VERSION" && check; then
    echo "installed mmcv $VERSION from $dir"; exit 0
  fi
  echo "the wheel in $dir does not fit this interpreter or lacks its ops; trying the next source"
done

STD=$("$PY" -c "import re, torch.utils.cpp_extension as e; print(max(re.findall(r'-std=c\+\+(\d+)', open(e.__file__).read()), key=int, default='17'))")
echo "building mmcv $VERSION from its sdist for torch $TORCH with C++$STD (7-11 minutes on 2 cores)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PY" -m pip download --disable-pip-version-check -q --no-deps --no-binary :all: --no-build-isolation \
  -d "$work" "mmcv==$VERSION" || { echo "could not download the mmcv $VERSION sdist" >&2; exit 1; }
tar -xzf "$work"/mmcv-$VERSION.tar.gz -C "$work" || { echo "could not unpack the mmcv sdist" >&2; exit 1; }
src="$work/mmcv-$VERSION"
sed -i -e "s/-std=c++14/-std=c++$STD/g" -e "s/-std=c++17/-std=c++$STD/g" "$src/setup.py"
grep -q "c++$STD" "$src/setup.py" || { echo "could not switch mmcv's setup.py to C++$STD" >&2; exit 1; }
MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} "$PY" -m pip wheel --disable-pip-version-check --no-deps \
  --no-build-isolation -w "$CACHE" "$src" || { echo "the mmcv build failed (see the compiler output above)" >&2; exit 1; }
"${PIP[@]}" -q --no-deps --no-index --find-links "$CACHE" "mmcv==$VERSION" || { echo "could not install the built wheel" >&2; exit 1; }
check || { echo "mmcv was installed but mmcv._ext does not import" >&2; exit 1; }
echo "built and installed mmcv $VERSION; the wheel is cached in $CACHE"
