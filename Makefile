# `make test` and `make demo` work on a fresh machine: each first installs what is missing
# into the current Python (use a virtual environment; .ci/run makes one).
PYTHON ?= python3
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install test demo benchmark

install:
	@$(PYTHON) -c "import torch, torchvision" 2>/dev/null || $(PYTHON) -m pip install $(TORCH_PIN)
	@$(PYTHON) -c "import importlib.metadata as m; m.version('drcnet'); import drcnet, pytest, h5py" 2>/dev/null || $(PYTHON) -m pip install -e '.[test]'

test: install
	$(PYTHON) -m pytest -q tests

demo: install
	$(PYTHON) scripts/demo.py

benchmark: install
	$(PYTHON) scripts/benchmark.py --quick
