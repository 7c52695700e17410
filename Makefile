# The two commands of the README: `make demo` and `make test`. Both set everything up first
# (idempotent: a second run only rebuilds what changed).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PACKAGE_SOURCES := $(wildcard dali_multimix/*.py dali_multimix/*/*.py dali_multimix/csrc/*) \
                   CMakeLists.txt pyproject.toml
# train/ and pipelines/ are not installed (generic top-level names): every command here runs them
# from the checkout (pytest has the same pythonpath in pyproject.toml).
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: setup demo test bench spiral system-packages gpu-check
setup: system-packages $(VENV)/.installed

# Embedded data and tools from Debian (Fashion-MNIST under /usr/share/datasets, espeak-ng and flite
# for the synthesised speech set), where apt-get exists and we may use it.
SYSTEM_PACKAGES := dataset-fashion-mnist espeak-ng flite
system-packages:
	@if dpkg -s $(SYSTEM_PACKAGES) >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(SYSTEM_PACKAGES); \
	else echo "note: install $(SYSTEM_PACKAGES) (Debian packages) for the embedded data sets"; fi

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
	$(PY) -m train.demo

test: setup
	$(VENV)/bin/pytest tests

bench: setup
	$(PY) bench/bench_op.py
	$(PY) bench/bench_train_step.py
	$(PY) bench/bench_pipelines.py
	$(PY) bench/bench_puzzle.py

spiral: setup
	$(PY) -m train.spiral --out outputs/spiral

# The GPU check (README, "GPU check"): DALI-free GPU tests and the kernel benchmark, with the
# system python (a GPU machine may have no .venv and no DALI), so it does not depend on setup.
gpu-check:
	PYTHON=$${PYTHON:-python3} bash bench/gpu_check.sh
