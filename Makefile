# Two entry points for a newcomer (see README): `make paint` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
CAPTION ?= a red circle to the left of a blue square at night
OUT ?= painting.png
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: paint test test-fast lint setup

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, from TORCH_INDEX: the CPU build by default (PyPI's Linux torch is a multi-GB
	# CUDA build); `make setup TORCH_INDEX=https://download.pytorch.org/whl/cu128` for CUDA 12.8.
	$(PY) -m pip install -q -c constraints.txt torch --extra-index-url $(TORCH_INDEX)
	# Then the package and the versions it was tested with (constraints.txt).
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,serve]'
	touch $@

setup: $(VENV)/.installed

paint: $(VENV)/.installed
	$(VENV)/bin/xlxmert paint "$(CAPTION)" -o $(OUT)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts

test: lint
	HF_HUB_OFFLINE=1 $(VENV)/bin/python -m pytest -q --durations=15

# The suite without the tests marked slow (> 10 s each; DEVELOPERS.md "Tests"), for quick iterations.
test-fast: lint
	HF_HUB_OFFLINE=1 $(VENV)/bin/python -m pytest -q --durations=15 -m "not slow"
