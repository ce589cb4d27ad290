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

.PHONY: install test test-fast test-gpu demo demo-det data lint clean

install: $(STAMP)

$(STAMP): requirements/*.txt setup.cfg pyproject.toml tools/install/install.sh tools/install/install_mmcv.sh
	PYTHON=$(PYTHON) MMCV_FIND_LINKS="$(MMCV_FIND_LINKS)" bash tools/install/install.sh $(VENV)
	@touch $@

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

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

demo: install
	bash tools/demo.sh $(DEMO_DATA) $(DEMO_WORK_DIR)

# Table 3's small detector (Faster R-CNN, half-width ResNet-18 + FPN + GN) on the people's boxes
demo-det: install
	bash tools/demo_det.sh $(DEMO_DATA) work_dirs/demo_det

clean:
	rm -rf work_dirs outputs .pytest_cache
