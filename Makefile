# mmpgnet: the two commands a newcomer runs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mmpgnet-installed
# A prebuilt mmcv 2.1.0 wheel may lie beside the checkout; without it mmcv builds from its sdist.
MMCV_FIND_LINKS ?= $(wildcard ../shared/wheels)
DEMO_WORK_DIR ?= work_dirs/demo
DEMO_DATA ?= data/synthetic_coco
PYTEST_ARGS ?=

.PHONY: install test test-fast test-compat test-gpu demo demo-det data lint clean

install: $(STAMP)

$(STAMP): requirements/*.txt setup.cfg pyproject.toml tools/install/install.sh tools/install/install_mmcv.sh
	PYTHON=$(PYTHON) MMCV_FIND_LINKS="$(MMCV_FIND_LINKS)" bash tools/install/install.sh $(VENV)
	@touch $@

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# The environment MMPose 1.3 / MMDetection 3.3 users have: torch 2.1.2 + torchvision 0.16.2 + mmcv
# 2.1.0 (a prebuilt wheel from COMPAT_MMCV_FIND_LINKS if there is one, else its sdist, about 7 min)
# in $(COMPAT_VENV), mmpgnet built with `python -m build` and installed from the wheel; then the
# non-slow suite against that install, get_config, mim train / mim test, and a stock MMPose config
# with the CFFM neck (tools/install/test_compat.sh).
COMPAT_VENV ?= .venv-compat
COMPAT_MMCV_FIND_LINKS ?= $(wildcard ../shared/wheels/torch2.1)

test-compat:
	PYTHON=$(PYTHON) STACK=torch2.1 MMPGNET_INSTALL=wheel MMCV_FIND_LINKS="$(COMPAT_MMCV_FIND_LINKS)" \
		bash tools/install/install.sh $(COMPAT_VENV)
	PYTEST_ARGS="$(PYTEST_ARGS)" bash tools/install/test_compat.sh $(COMPAT_VENV)

# On a CUDA machine: the CUDA tests (component part with torch + mmengine + mmcv-lite alone; the
# model part where mmdet / mmpose import), then the GPU report, written even if a test failed.
# Uses the venv when there is one, else python3 (README.md, "Running on a GPU").
GPU_PY ?= $(if $(wildcard $(PY)),$(PY),python3)
GPU_REPORT ?= work_dirs/gpu_report.md

test-gpu:
	@status=0; \
	$(GPU_PY) -m pytest -m cuda tests/test_cuda.py $(PYTEST_ARGS) || status=$$?; \
	$(GPU_PY) tools/analysis/gpu_report.py --out $(GPU_REPORT) || status=$$?; \
	exit $$status

data: install
	$(PY) tools/dataset_converters/generate_synthetic_coco.py $(DEMO_DATA)

# flake8 and isort (settings in setup.cfg, versions pinned in requirements/constraints*.txt); both
# run, and the target fails if either finds something
LINT_PATHS ?= mmpgnet tools tests configs setup.py

lint: install
	@status=0; \
	$(PY) -m flake8 $(LINT_PATHS) || status=$$?; \
	$(PY) -m isort --check-only --diff $(LINT_PATHS) || status=$$?; \
	exit $$status

demo: install
	bash tools/demo.sh $(DEMO_DATA) $(DEMO_WORK_DIR)

# Table 3's small detector (Faster R-CNN, half-width ResNet-18 + FPN + GN) on the people's boxes
demo-det: install
	bash tools/demo_det.sh $(DEMO_DATA) work_dirs/demo_det

clean:
	rm -rf work_dirs outputs .pytest_cache
