# Two entry points for a newcomer (see README): `make paint` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
CAPTION ?= a red circle to the left of a blue square at night
OUT ?= painting.png

.PHONY: paint test lint setup

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU build of torch first (a plain `torch` would pull a multi-GB CUDA build on Linux)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,serve]'
	touch $@

setup: $(VENV)/.installed

paint: $(VENV)/.installed
	$(VENV)/bin/xlxmert paint "$(CAPTION)" -o $(OUT)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts

test: lint
	HF_HUB_OFFLINE=1 $(VENV)/bin/python -m pytest -q
