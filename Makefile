# slowburn developer entry points. `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_FLAGS ?= -q
# two workers; a module's tests stay on one worker (module-scoped broker fixtures and references)
PYTEST_ARGS ?= -n 2 --dist loadfile

.PHONY: demo test lint format tools kafka-jars eval bench bench-smoke clean

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) -U pip
	$(PY) -m pip install $(PIP_FLAGS) -e '.[dev]'
	@touch $@

venv: $(VENV)/.installed

## demo: replay the built-in simulated enterprise through the engine and print the alerts
demo: $(VENV)/.installed
	$(VENV)/bin/slowburn demo

## tools: Debian packages the integration tests drive (softflowd, pmacct, tshark)
tools:
	bash deploy/install-tools

## kafka-jars: fetch Apache Kafka from Maven Central into ~/.cache/slowburn/kafka (once)
kafka-jars:
	bash deploy/kafka/local-kafka fetch

## test: everything the test suite needs, then the whole suite (unit, doctest, real Kafka, real sensors)
test: $(VENV)/.installed tools kafka-jars
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check stream pipelines tests bench eval
	$(VENV)/bin/ruff format --check stream pipelines tests bench eval
	$(VENV)/bin/mypy

format: $(VENV)/.installed
	$(VENV)/bin/ruff format stream pipelines tests bench eval
	$(VENV)/bin/ruff check --fix stream pipelines tests bench eval

eval: $(VENV)/.installed
	$(PY) -m eval.run_all

bench: $(VENV)/.installed
	$(PY) bench/run_all.py

## bench-smoke: every benchmark on small inputs (CI): they must run and print their figures
bench-smoke: $(VENV)/.installed
	$(PY) bench/run_all.py --smoke

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
