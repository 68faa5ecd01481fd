# Two commands on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PORT ?= 8080
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --quiet --disable-pip-version-check

# What serving needs: the runtime dependencies only (the package runs from this checkout).
$(BIN)/.serving: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) --no-compile -r requirements.txt
	touch $@

# What the tests need besides: the framework runtimes, Google's clients, the tools. Then
# everything compiled once: the serving install skips it, and where PYTHONDONTWRITEBYTECODE
# is set, every process the tests start would compile its imports again (2 s and more).
$(BIN)/.installed: $(BIN)/.serving $(wildcard requirements-*.txt)
	$(PIP) -r requirements-dev.txt
	$(PIP) --no-deps -r requirements-keras2.txt
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib > /dev/null
	touch $@

.PHONY: serve test lint
serve: $(BIN)/.serving  ## run the function on http://127.0.0.1:$(PORT)
	$(BIN)/functions-framework --target predict --source main.py --port $(PORT)

test: $(BIN)/.installed lint  ## lint, then every test
	$(BIN)/python -m pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/shellcheck deploy.sh .ci/run
