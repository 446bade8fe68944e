# Two commands set everything up on a fresh Debian machine with Python 3.11:
#   make demo   -- virtual environment, install, build the ops, run the main job on synthetic scenes
#   make test   -- the same setup, then the whole test suite
# Both are idempotent; a second run only rebuilds what changed.

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# CPU torch where there is no working GPU (this machine's pip finds the CPU wheel on local disk),
# PyPI's default CUDA build where nvidia-smi works.
TORCH_VERSION ?= 2.13.0
HAVE_GPU := $(shell nvidia-smi >/dev/null 2>&1 && echo 1)
# open3d (libusb, GL, EGL, OpenMP), its offscreen renderer (Vulkan software driver), a headless
# browser for the report tests and a virtual X display (xvfb) for the test of pd-vis --show's window
SYS_DEPS := libusb-1.0-0 libgl1 libegl1 libgomp1 libvulkan1 mesa-vulkan-drivers libegl-mesa0 chromium xvfb
OPS_SOURCES := $(shell find ops/csrc -name '*.cpp' -o -name '*.cu' -o -name '*.h' -o -name '*.cuh' 2>/dev/null)
OPS_STAMP := $(VENV)/.ops-built

.PHONY: demo test build venv sysdeps cuda-compile-check gpu-check docker-check bench clean

demo: build
	$(VENV)/bin/pd-train --demo $(DEMO_ARGS)

test: build
	$(PY) -m pytest -q $(PYTEST_ARGS)

venv: $(VENV)/.installed

build: $(OPS_STAMP)

# open3d needs a few shared libraries from Debian; pictures and the report tests need a few more.
sysdeps:
	@missing=""; for p in $(SYS_DEPS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $$missing; \
	  else echo "please install the Debian packages:$$missing (needed by open3d)"; fi; fi

$(VENV)/.installed: pyproject.toml setup.py | sysdeps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip "setuptools>=64" wheel ninja
ifeq ($(HAVE_GPU),1)
	PIP_FIND_LINKS= $(PIP) install -q "torch==$(TORCH_VERSION)"
else
	$(PIP) install -q "torch==$(TORCH_VERSION)"
endif
	$(PIP) install -q --no-build-isolation -e ".[test]"
	touch $(OPS_STAMP) $@

$(OPS_STAMP): $(VENV)/.installed $(OPS_SOURCES) setup.py
	$(PY) setup.py -q build_ext --inplace
	touch $@

# Compile-only check of every .cu file with the machine's nvcc (sm_80, sm_90); no GPU needed.
cuda-compile-check: venv
	$(PY) ops/check_cuda_compile.py

# On a GPU machine: build the CUDA ops, run the CUDA tests and the GPU benchmarks, print a summary.
gpu-check:
	bash scripts/gpu_check.sh

# Builds the CPU variant of docker/Dockerfile with buildah (no Docker engine needed) and runs the demo,
# the evaluator, the ops tests and pd-deploy inside the images (root; about 20-30 minutes here).
docker-check: venv
	PYTHON=$(PY) bash scripts/docker_check.sh

bench: build
	$(PY) benchmarks/bm_ops.py

clean:
	rm -rf build $(VENV) ops/_C*.so *.egg-info
