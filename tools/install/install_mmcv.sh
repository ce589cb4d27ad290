#!/usr/bin/env bash
# Installs mmcv 2.1.0 *with its compiled ops* (mmcv._ext) into the interpreter $PY.
#
# PyPI has no mmcv 2.1.0 wheel for torch 2.14, so:
#   1. if a folder in $MMCV_FIND_LINKS or the wheel cache holds an mmcv 2.1.0 wheel that fits this
#      interpreter, install it;
#   2. otherwise download the sdist, switch its C++ standard to C++20 (torch 2.14's headers need it;
#      mmcv 2.1.0's setup.py asks for C++14/17), build a wheel with MMCV_WITH_OPS=1 into the cache
#      (about 10 minutes on 2 cores) and install it.
# Either way the result is checked by importing mmcv.ops and mmcv._ext.
set -uo pipefail

PY=${PY:-.venv/bin/python}
VERSION=2.1.0
CACHE=${MMCV_WHEEL_CACHE:-.cache/wheels}
FIND_LINKS=${MMCV_FIND_LINKS:-}
PIP=("$PY" -m pip install --disable-pip-version-check -c requirements/constraints.txt)

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

echo "building mmcv $VERSION from its sdist with C++20 (about 10 minutes on 2 cores)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PY" -m pip download --disable-pip-version-check -q --no-deps --no-binary :all: --no-build-isolation \
  -d "$work" "mmcv==$VERSION" || { echo "could not download the mmcv $VERSION sdist" >&2; exit 1; }
tar -xzf "$work"/mmcv-$VERSION.tar.gz -C "$work" || { echo "could not unpack the mmcv sdist" >&2; exit 1; }
src="$work/mmcv-$VERSION"
sed -i -e 's/-std=c++14/-std=c++20/g' -e 's/-std=c++17/-std=c++20/g' "$src/setup.py"
grep -q 'c++20' "$src/setup.py" || { echo "could not switch mmcv's setup.py to C++20" >&2; exit 1; }
MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} "$PY" -m pip wheel --disable-pip-version-check --no-deps \
  --no-build-isolation -w "$CACHE" "$src" || { echo "the mmcv build failed (see the compiler output above)" >&2; exit 1; }
"${PIP[@]}" -q --no-deps --no-index --find-links "$CACHE" "mmcv==$VERSION" || { echo "could not install the built wheel" >&2; exit 1; }
check || { echo "mmcv was installed but mmcv._ext does not import" >&2; exit 1; }
echo "built and installed mmcv $VERSION; the wheel is cached in $CACHE"
