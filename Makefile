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
PROD_BROKER_URL   ?= redis://127.0.0.1:6379/13

.PHONY: run test lint browser clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-run: $(PY) pyproject.toml constraints/cpu.txt
	$(PIP) -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-run
	$(PIP) -e ".[test]"
	touch $@

run: $(VENV)/.installed-run
	$(PY) manage.py serve --migrate --host $(HOST) --port $(PORT)

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# Browser tests drive Debian's Chromium (Playwright's own browser download cannot run here).
browser:
	@command -v chromium >/dev/null 2>&1 || \
		{ apt-get update -q && apt-get install -y -q --no-install-recommends chromium; } || \
		echo "Chromium could not be installed: browser tests will be skipped (failed under CI=true)"

test: lint browser
	$(PY) -m pytest
	DATABASE_URL=$(PROD_DATABASE_URL) REDIS_URL=$(PROD_REDIS_URL) CELERY_BROKER_URL=$(PROD_BROKER_URL) \
		$(PY) -m pytest -m production -p no:cacheprovider

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
