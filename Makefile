# The two commands of the README: `make demo` and `make test`. Both set everything up first
# (idempotent: a second run only rebuilds what changed).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PACKAGE_SOURCES := $(wildcard dali_multimix/*.py dali_multimix/*/*.py dali_multimix/csrc/*) CMakeLists.txt pyproject.toml

.PHONY: setup demo test bench
setup: $(VENV)/.installed

$(VENV)/.requirements: requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

# Compiles the DALI plugin against the DALI installed above (hence --no-build-isolation).
$(VENV)/.installed: $(VENV)/.requirements $(PACKAGE_SOURCES)
	$(PY) -m pip install -q --no-build-isolation --no-deps .
	touch $@

demo: setup
	$(VENV)/bin/multimix-demo --output outputs/interpolations.png

test: setup
	$(VENV)/bin/pytest tests

bench: setup
	$(PY) bench/bench_op.py
