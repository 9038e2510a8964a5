# Two commands do all the set-up on a fresh machine (Python 3.11, no Docker needed):
#   make verify   - the main job: deploy v1/v2 locally, verify the 50/50 split, kill v2, verify the fallback
#   make test     - ruff + mypy --strict, then the test suite (unit, plugin, local-backend integration;
#                   e2e is skipped unless asked)
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= test,pulumi,train

.PHONY: setup verify test check bench clean

$(VENV)/.installed-$(EXTRAS): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

setup: $(VENV)/.installed-$(EXTRAS)

verify: setup
	$(VENV)/bin/abtraffic verify --fallback kill:v2 --report-dir reports

test: check
	$(PY) -m pytest

check: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: setup
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) reports .pytest_cache .mypy_cache .ruff_cache build dist
