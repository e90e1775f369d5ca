# Two commands for a fresh machine: `make run` and `make test`. Everything else is a helper.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.installed-stamp
WEB_DEPS := web/node_modules/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run demo test lint typecheck pytest web web-test bench screenshots clean

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: the CPU build on disk, never the CUDA wheels
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c requirements/constraints.txt -e ".[dev]"
	# test-only reference implementations (their full dependency sets do not install here)
	$(PIP) install -q --no-deps scgpt==0.2.4 scimilarity==0.4.1
	touch $(STAMP)

install: $(STAMP)

$(WEB_DEPS): web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund
	touch $(WEB_DEPS)

web/dist/index.html: | $(WEB_DEPS)
	cd web && npm run build

# the web UI, built into web/dist (served by `cellfoundry serve` at /)
web: $(WEB_DEPS)
	cd web && npm run build

web-test: $(WEB_DEPS)
	cd web && npm test && npm run check:lock && npm run check:api

run: $(STAMP) web/dist/index.html
	$(VENV)/bin/cellfoundry serve --host $(HOST) --port $(PORT)

demo: $(STAMP)
	$(VENV)/bin/cellfoundry demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	PYTHONPATH=src $(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP) web
	scripts/services.sh
	# two workers (pytest-xdist), a test file each: most tests wait on servers, browsers, workers
	$(VENV)/bin/pytest -q -n 2 --dist loadfile

test: lint typecheck web-test pytest

screenshots: $(STAMP) web
	cd web && npm run screenshots

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache web/node_modules web/dist
