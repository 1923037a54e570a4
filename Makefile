# The two commands a new machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONSTRAINTS := constraints/cpu.txt
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml $(CONSTRAINTS) | cksum | cut -d' ' -f1)
EXTRAS ?= dev,hf
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast check lint format clean

setup: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -c $(CONSTRAINTS) -e '.[$(EXTRAS)]'
	rm -f $(VENV)/.installed-*
	touch $@

# The whole way on the bundled digits example: sweep (build, quality check, in-process timing, served load)
# → report (report.md + report.html) → the best variant as a bundle → verify → serve it and check it over HTTP.
DEMO_BUNDLE ?= bundles/digits-demo
demo: setup
	$(BIN)/workbench run recipes/digits-cpu.yaml
	rm -rf $(DEMO_BUNDLE) $(DEMO_BUNDLE).tar.gz
	$(BIN)/workbench export latest --variant best --out $(DEMO_BUNDLE) --version 0.1.0
	$(BIN)/python -m serving_harness verify $(DEMO_BUNDLE)
	$(BIN)/python examples/serve_check.py $(DEMO_BUNDLE)

test: setup
	$(BIN)/python -m pytest -q -m "not gpu" $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -q -m "not gpu and not slow" $(PYTEST_ARGS)

check: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
