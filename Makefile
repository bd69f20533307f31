# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
TORCH_PINS := torch==2.14.1 torchvision==0.29.1 ninja
# The consumers' own readers that the tests check our files with. --no-deps: their full dependencies would
# replace opencv-python-headless (ultralytics) or pull Qt (labelme); the functions used need none of them.
CONSUMER_PINS := ultralytics==8.4.190 labelme==6.3.1
# The CUDA kernel is compiled whenever a toolkit is found; torch otherwise looks in /usr/local and fails to link.
CUDA_HOME ?= $(shell [ -x /usr/local/cuda/bin/nvcc ] && echo /usr/local/cuda)
export CUDA_HOME
TORCH_CUDA_ARCH_LIST ?= 9.0
export TORCH_CUDA_ARCH_LIST
# datumaro (CVAT's importer) cannot share our venv (its pins differ): the conformance tests run it from its own.
DATUMARO_VENV := .venv-datumaro
DATUMARO_STAMP := $(DATUMARO_VENV)/.installed
KERNEL_SOURCES := $(wildcard mrseg_kernels/csrc/*.cpp mrseg_kernels/csrc/*.cu mrseg_kernels/csrc/*.h)

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml setup.py $(KERNEL_SOURCES)
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q $(TORCH_PINS)
	$(PIP) install -q --no-build-isolation -e '.[dev,plot]'
	$(PIP) install -q --no-deps $(CONSUMER_PINS)
	touch $(STAMP)

demo: install
	$(PY) -m mrseg --version
	$(PY) -m mrseg_kernels.selfcheck
	$(PY) examples/demo.py

$(DATUMARO_STAMP):
	[ -x $(DATUMARO_VENV)/bin/python ] || $(PYTHON) -m venv $(DATUMARO_VENV)
	$(DATUMARO_VENV)/bin/python -m pip install -q datumaro==1.13.12
	touch $(DATUMARO_STAMP)

test: install $(DATUMARO_STAMP)
	MRSEG_DATUMARO_PYTHON=$(abspath $(DATUMARO_VENV))/bin/python $(PY) -m pytest -q tests

lint: install
	$(VENV)/bin/ruff check .

bench: install
	$(PY) benchmarks/roi_align.py

clean:
	rm -rf build *.egg-info mrseg_kernels/*.so $(STAMP) $(DATUMARO_VENV)
