# Groupwise: `make run` sets everything up and starts the dashboard with a worker;
# `make test` installs the test extras and runs the whole suite (what CI runs).
PYTHON ?= python3
VENV   ?= .venv
HOST   ?= 127.0.0.1
PORT   ?= 8000
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --disable-pip-version-check -q -c constraints/cpu.txt

# The production profile the suite re-runs its `production`-marked tests under.
PROD_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/groupwise
PROD_REDIS_URL    ?= redis://127.0.0.1:6379/14

.PHONY: run test lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-run: $(PY) pyproject.toml constraints/cpu.txt
	$(PIP) -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-run
	$(PIP) -e ".[test]"
	touch $@

run: $(VENV)/.installed-run
	$(PY) manage.py serve --host $(HOST) --port $(PORT)

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest
	DATABASE_URL=$(PROD_DATABASE_URL) REDIS_URL=$(PROD_REDIS_URL) \
		$(PY) -m pytest -m production -p no:cacheprovider

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
