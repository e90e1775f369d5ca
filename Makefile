# Two commands for a fresh machine: `make run` and `make test`. Everything else is a helper.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.installed-stamp

.PHONY: install run demo test lint typecheck pytest bench clean

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: the CPU build on disk, never the CUDA wheels
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c requirements/constraints.txt -e ".[dev]"
	# test-only reference implementations (their full dependency sets do not install here)
	$(PIP) install -q --no-deps scgpt==0.2.4 scimilarity==0.4.1
	touch $(STAMP)

install: $(STAMP)

run: demo

demo: $(STAMP)
	$(VENV)/bin/cellfoundry demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP)
	$(VENV)/bin/pytest -q

test: lint typecheck pytest

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
